"""The agent API's check and restore-drill reports (docs/agent-api.md, "Extensions: checks and
restore drills")."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from backend.api.deps import AS_AGENT, AgentDep, ServicesDep
from backend.check_schemas import DrillRequest, DrillResponse, RepoCheckRequest, RepoCheckResponse


class AgentCheckController(Controller):
    path = "/api/agent"
    tags = ["agent", "snapshots"]
    dependencies = AS_AGENT

    @post(
        "/repo/check",
        status_code=HTTP_200_OK,
        summary="Report what `backapp-agent check` found in the newest snapshots",
    )
    async def check(
        self, data: JSONBody[RepoCheckRequest], agent: AgentDep, services: ServicesDep
    ) -> RepoCheckResponse:
        return await services.checks.record_check(agent, data)

    @post("/drill", status_code=HTTP_200_OK, summary="Report a restore drill")
    async def drill(
        self, data: JSONBody[DrillRequest], agent: AgentDep, services: ServicesDep
    ) -> DrillResponse:
        return await services.checks.record_drill(agent, data)
