"""The JSON shapes of the inheritance mark (a new machine replaces an old one; docs/api.md and
docs/agent-api.md, "Inheriting an agent")."""

from __future__ import annotations

from backend.schemas import Camel, Uuid


class InheritRequest(Camel, forbid_unknown_fields=True):
    from_agent_id: Uuid


class InheritanceOut(Camel):
    """Agent ``agentId`` replaces (inherits the backups of) agent ``fromAgentId``."""

    agent_id: str
    agent_name: str
    from_agent_id: str
    from_agent_name: str
    created_at: str
    created_by: str | None


class InheritanceResponse(Camel):
    inheritance: InheritanceOut
    success: bool = True


class InheritanceListResponse(Camel):
    inherits: list[InheritanceOut]
    """The machines this agent replaces."""
    inherited_by: list[InheritanceOut]
    """The machines that replace this agent."""
    success: bool = True
