"""The agent API's side of inheriting a machine: the machines this agent replaces, and continuing
one's snapshot repository (docs/agent-api.md, "Extensions: recovery keys")."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from backend.api.deps import AS_AGENT, AgentDep
from backend.continue_schemas import InheritedOut, RepoContinueOut, RepoContinueRequest
from backend.services.continuation import ContinuationService

# Stateless: every call reads and writes the database only.
_CONTINUATION = ContinuationService()


class AgentContinueController(Controller):
    path = "/api/agent"
    tags = ["agent", "recovery"]
    dependencies = AS_AGENT

    @get("/inherited", summary="The machines this agent replaces (the owner's marks)")
    async def inherited(self, agent: AgentDep) -> InheritedOut:
        return InheritedOut(agents=await _CONTINUATION.inherited(agent))

    @post(
        "/repo/continue",
        status_code=HTTP_200_OK,
        summary="Continue the snapshot repository of a machine this agent replaces",
    )
    async def continue_repo(
        self, data: JSONBody[RepoContinueRequest], agent: AgentDep
    ) -> RepoContinueOut:
        return await _CONTINUATION.continue_from(
            agent,
            from_agent_id=data.from_agent_id,
            proof=data.proof,
            wrapped_key=data.wrapped_key,
            version=data.version,
        )
