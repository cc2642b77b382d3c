"""The agent API: the spec's six endpoints plus the multipart extension (docs/agent-api.md)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, WebSocket, get, post, websocket
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from backend.api.agent_ws import serve_agent_socket
from backend.api.deps import AS_AGENT, AS_USER, AgentDep, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.run_schemas import (
    AbortRequest,
    LeaseOut,
    LeaseReleaseRequest,
    LeaseRenewRequest,
    LeaseRequest,
    LeaseResponse,
    PartRequest,
    PartResponse,
    ProgressRequest,
    UploadCompleteRequest,
    UploadCompleteResponse,
)
from backend.schemas import (
    AgentBackupResponse,
    AgentBackupsResponse,
    AgentConfigsResponse,
    AgentRef,
    CompleteRequest,
    CompleteResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LogRequest,
    OkResponse,
    RegisteredAgent,
    RegisterRequest,
    RegisterResponse,
    RestoreRequest,
    RestoreResponse,
    StartRequest,
    StartResponse,
    UpdateOut,
)
from backend.services.backups import AGENT_FEATURES
from backend.services.clock import iso
from backend.services.leases import LeaseGrant
from backend.services.limits import heartbeat_limits


def _lease(grant: LeaseGrant) -> LeaseResponse:
    return LeaseResponse(lease=LeaseOut(token=grant.token, expires_at=iso(grant.expires_at) or ""))


class AgentApiController(Controller):
    path = "/api/agent"
    guards = [api_guard]
    tags = ["agent"]

    @post(
        "/register",
        status_code=HTTP_201_CREATED,
        dependencies=AS_USER,
        summary="Register an agent (session-authenticated); the API key is shown once",
    )
    async def register(
        self, data: JSONBody[RegisterRequest], user: UserDep, services: ServicesDep
    ) -> RegisterResponse:
        agent, key = await services.agents.register(user, data.name, data.platform)
        return RegisterResponse(
            agent=RegisteredAgent(id=agent.id, name=agent.name, api_key=key, status=agent.status)
        )

    @post("/heartbeat", status_code=HTTP_200_OK, dependencies=AS_AGENT, summary="Agent is alive")
    async def heartbeat(
        self, agent: AgentDep, services: ServicesDep, data: JSONBody[HeartbeatRequest | None] = None
    ) -> HeartbeatResponse:
        data = data or HeartbeatRequest()
        await services.runs.record_timezone(agent, data.timezone)
        await services.registry.heartbeat(agent, data.version, data.platform, data.mode)
        limits = await heartbeat_limits(agent.id, services.registry.read)
        update = await services.releases.offer(
            agent.user_id, data.platform or agent.platform, data.version
        )
        return HeartbeatResponse(
            status="online",
            poll_interval=services.settings.poll_interval,
            agent=AgentRef(id=str(agent.id), name=agent.name),
            run_requests=await services.runs.pending_for_agent(agent),
            restore_requests=await services.restore_jobs.pending_ids(agent),
            features=list(AGENT_FEATURES),
            compact=await services.compaction.requested_for(agent, services.registry.read),
            limits=limits.limits,
            config_limits=limits.config_limits,
            parallel_backups=limits.parallel_backups,
            update=UpdateOut(**vars(update)) if update else None,
        )

    @get("/configs", dependencies=AS_AGENT, summary="The configs assigned to this agent")
    async def configs(self, agent: AgentDep, services: ServicesDep) -> AgentConfigsResponse:
        return AgentConfigsResponse(
            configs=await services.configs.for_agent(agent.id, agent.user_id)
        )

    @post(
        "/backup/start",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Start a backup: get a pre-signed upload URL (or a multipart upload)",
    )
    async def start(
        self, data: JSONBody[StartRequest], agent: AgentDep, services: ServicesDep
    ) -> StartResponse:
        log_id, upload = await services.backups.start(agent, data)
        return StartResponse(log_id=log_id, upload=upload)

    @post(
        "/backup/complete",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Report a finished backup; the server verifies the stored object",
    )
    async def complete(
        self, data: JSONBody[CompleteRequest], agent: AgentDep, services: ServicesDep
    ) -> CompleteResponse:
        return CompleteResponse(status=await services.backups.complete(agent, data))  # type: ignore[arg-type]

    @post(
        "/backup/upload/part",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="A pre-signed URL for one part of a multipart upload",
    )
    async def upload_part(
        self, data: JSONBody[PartRequest], agent: AgentDep, services: ServicesDep
    ) -> PartResponse:
        part = await services.backups.part_url(
            agent, data.log_id, data.part_number, data.size, data.sha256, data.crc32
        )
        return PartResponse(part=part)

    @post(
        "/backup/upload/complete",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Assemble a multipart upload from its parts",
    )
    async def upload_complete(
        self, data: JSONBody[UploadCompleteRequest], agent: AgentDep, services: ServicesDep
    ) -> UploadCompleteResponse:
        size = await services.backups.upload_complete(
            agent, data.log_id, data.parts, object_crc32=data.object_crc32
        )
        return UploadCompleteResponse(size=size)

    @post(
        "/backup/upload/abort",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Abort a multipart upload and mark the backup failed",
    )
    async def upload_abort(
        self, data: JSONBody[AbortRequest], agent: AgentDep, services: ServicesDep
    ) -> OkResponse:
        await services.backups.upload_abort(agent, data.log_id, data.reason)
        return OkResponse()

    @get(
        "/backups",
        dependencies=AS_AGENT,
        summary="Completed backups of the configs assigned to this agent (what it may restore)",
    )
    async def backups(
        self,
        agent: AgentDep,
        services: ServicesDep,
        config_id: Annotated[str | None, QueryParameter(name="configId")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        agent_id: Annotated[str | None, QueryParameter(name="agentId", max_length=64)] = None,
    ) -> AgentBackupsResponse:
        """``agentId``: the backups made by an agent this one inherits (404 for any other)."""
        return AgentBackupsResponse(
            backups=await services.restores.restorable(agent, config_id, limit, agent_id)
        )

    @get(
        "/backups/{backup_id:str}",
        dependencies=AS_AGENT,
        summary="One backup this agent may restore (its type, and which agent's repository)",
    )
    async def backup(
        self, backup_id: FromPath[str], agent: AgentDep, services: ServicesDep
    ) -> AgentBackupResponse:
        return AgentBackupResponse(backup=await services.restores.backup(agent, backup_id))

    @post(
        "/restore",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="A pre-signed GET URL (1 hour, that object only) to restore one backup",
    )
    async def restore(
        self, data: JSONBody[RestoreRequest], agent: AgentDep, services: ServicesDep
    ) -> RestoreResponse:
        return RestoreResponse(restore=await services.restores.restore(agent, data.backup_id))

    @post("/log", status_code=HTTP_201_CREATED, dependencies=AS_AGENT, summary="Send a log line")
    async def log(
        self, data: JSONBody[LogRequest], agent: AgentDep, services: ServicesDep
    ) -> OkResponse:
        await services.agents.add_log(agent, data.level, data.message, data.metadata)
        services.live.agent_log(
            agent.user_id, agent.id, agent.name, data.level, data.message, data.metadata
        )
        return OkResponse()

    @post(
        "/backup/progress",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Progress of a running backup, or of a run before its log opens (configId)",
    )
    async def progress(
        self, data: JSONBody[ProgressRequest], agent: AgentDep, services: ServicesDep
    ) -> OkResponse:
        await services.progress.record(agent, data)
        return OkResponse()

    @post(
        "/lease",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Take the lease of a config before running it (409 while another runner holds it)",
    )
    async def lease(
        self, data: JSONBody[LeaseRequest], agent: AgentDep, services: ServicesDep
    ) -> LeaseResponse:
        grant = await services.runs.lease_acquire(
            agent,
            data.config_id,
            data.ttl_seconds,
            instance=data.instance,
            take_over=data.take_over,
        )
        return _lease(grant)

    @post(
        "/lease/renew",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Extend a held lease (409 when it was lost)",
    )
    async def lease_renew(
        self, data: JSONBody[LeaseRenewRequest], agent: AgentDep, services: ServicesDep
    ) -> LeaseResponse:
        grant = await services.runs.lease_renew(agent, data.config_id, data.token, data.ttl_seconds)
        return _lease(grant)

    @post(
        "/lease/release",
        status_code=HTTP_200_OK,
        dependencies=AS_AGENT,
        summary="Give a lease up (idempotent)",
    )
    async def lease_release(
        self, data: JSONBody[LeaseReleaseRequest], agent: AgentDep, services: ServicesDep
    ) -> OkResponse:
        await services.runs.lease_release(agent, data.config_id, data.token)
        return OkResponse()

    @websocket("/ws", summary="Back Up Now requests, as they are made (X-Agent-API-Key header)")
    async def ws(self, socket: WebSocket[Any, Any, Any], services: ServicesDep) -> None:
        await serve_agent_socket(socket, services)
