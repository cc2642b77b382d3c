"""Restores asked for from the web console (docs/agent-api.md, "Restores from the web console"):
the owner's request and status, and the agent's start, progress and outcome."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from backend.api.deps import AS_AGENT, AS_USER, AgentDep, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.restore_job_schemas import (
    RestoreJobCreated,
    RestoreJobFinish,
    RestoreJobProgress,
    RestoreJobRequest,
    RestoreJobResponse,
    RestoreJobTicket,
)
from backend.schemas import OkResponse

__all__ = ["AgentRestoreJobController", "RestoreJobController"]


class RestoreJobController(Controller):
    path = "/api"
    guards = [api_guard]
    tags = ["backups"]
    dependencies = AS_USER

    @post(
        "/backups/{backup_id:str}/restore",
        status_code=HTTP_202_ACCEPTED,
        summary="Ask a machine to restore paths of this backup into a folder (202: pending)",
    )
    async def request(
        self,
        backup_id: FromPath[str],
        data: JSONBody[RestoreJobRequest],
        user: UserDep,
        services: ServicesDep,
    ) -> RestoreJobCreated:
        job = await services.restore_jobs.request(user, backup_id, data)
        return RestoreJobCreated(id=job.id, status=job.status)

    @get("/restores/{restore_id:str}", summary="A restore: pending, running, completed, failed")
    async def status(
        self, restore_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> RestoreJobResponse:
        return RestoreJobResponse(restore=await services.restore_jobs.get(user, restore_id))


class AgentRestoreJobController(Controller):
    path = "/api/agent/restores"
    guards = [api_guard]
    tags = ["agent"]
    dependencies = AS_AGENT

    @post("/{restore_id:str}/start", status_code=HTTP_200_OK, summary="Take a pending restore")
    async def start(
        self, restore_id: FromPath[str], agent: AgentDep, services: ServicesDep
    ) -> RestoreJobTicket:
        return await services.restore_jobs.start(agent, restore_id)

    @post(
        "/{restore_id:str}/progress", status_code=HTTP_200_OK, summary="A running restore's counts"
    )
    async def progress(
        self,
        restore_id: FromPath[str],
        data: JSONBody[RestoreJobProgress],
        agent: AgentDep,
        services: ServicesDep,
    ) -> OkResponse:
        await services.restore_jobs.progress(agent, restore_id, data)
        return OkResponse()

    @post("/{restore_id:str}/complete", status_code=HTTP_200_OK, summary="A restore's outcome")
    async def complete(
        self,
        restore_id: FromPath[str],
        data: JSONBody[RestoreJobFinish],
        agent: AgentDep,
        services: ServicesDep,
    ) -> OkResponse:
        await services.restore_jobs.finish(agent, restore_id, data)
        return OkResponse()
