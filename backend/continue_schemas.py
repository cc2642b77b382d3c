"""Request and response shapes of continuing an old machine's repository and listing the machines
an agent replaces (``docs/agent-api.md``, "Extensions: recovery keys")."""

from __future__ import annotations

from backend.recovery_schemas import Proof, Version, Wrapped
from backend.schemas import Camel, Uuid


class RepoContinueRequest(Camel, forbid_unknown_fields=True):
    from_agent_id: Uuid
    proof: Proof
    """Derived from the recovery code (as for a rotation): the server keeps only its digest."""
    wrapped_key: Wrapped
    """The old repository's key wrapped for the recovery key: this agent's wrapped key from now."""
    version: Version


class RepoContinueOut(Camel):
    from_agent_id: str
    from_agent_name: str
    snapshots: int
    """Committed snapshots in the repository (the old machine's so far)."""
    pack_count: int


class InheritedAgentOut(Camel):
    agent_id: str
    name: str
    snapshots: int
    """Committed snapshots in its repository (0: nothing to continue)."""
    continued: bool
    """This agent already continues its repository."""


class InheritedOut(Camel):
    agents: list[InheritedAgentOut]
