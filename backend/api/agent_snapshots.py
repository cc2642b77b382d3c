"""The agent API's snapshot endpoints (docs/agent-api.md, "Extensions: snapshots")."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from backend.api.deps import AS_AGENT, AgentDep, ServicesDep
from backend.services.inheritance import repository_reader
from backend.snapshot_schemas import (
    ObjectsRequest,
    ObjectsResponse,
    RepoListResponse,
    RepoReadRequest,
    RepoReadResponse,
    SnapshotAbortRequest,
    SnapshotCompleteRequest,
    SnapshotCompleteResponse,
    SnapshotStartRequest,
    SnapshotStartResponse,
)


class AgentSnapshotController(Controller):
    path = "/api/agent"
    tags = ["agent", "snapshots"]
    dependencies = AS_AGENT

    @post("/snapshot/start", status_code=HTTP_200_OK, summary="Start a snapshot (holds the lease)")
    async def start(
        self, data: JSONBody[SnapshotStartRequest], agent: AgentDep, services: ServicesDep
    ) -> SnapshotStartResponse:
        return await services.snapshots.start(agent, data)

    @post(
        "/snapshot/objects",
        status_code=HTTP_200_OK,
        summary="Which repository objects exist; pre-signed PUTs for the others (batch)",
    )
    async def objects(
        self, data: JSONBody[ObjectsRequest], agent: AgentDep, services: ServicesDep
    ) -> ObjectsResponse:
        return ObjectsResponse(
            objects=await services.snapshots.objects(agent, data.backup_id, data.objects)
        )

    @post(
        "/snapshot/complete",
        status_code=HTTP_200_OK,
        summary="Commit a snapshot once everything it needs is in storage",
    )
    async def complete(
        self, data: JSONBody[SnapshotCompleteRequest], agent: AgentDep, services: ServicesDep
    ) -> SnapshotCompleteResponse:
        return SnapshotCompleteResponse(status=await services.snapshots.complete(agent, data))

    @post("/snapshot/abort", status_code=HTTP_200_OK, summary="A snapshot stopped")
    async def abort(
        self, data: JSONBody[SnapshotAbortRequest], agent: AgentDep, services: ServicesDep
    ) -> SnapshotCompleteResponse:
        return SnapshotCompleteResponse(status=await services.snapshots.abort(agent, data))

    @post(
        "/repo/read",
        status_code=HTTP_200_OK,
        summary="Pre-signed GETs for objects of this agent's repository (or, with agentId, of "
        "one it inherits)",
    )
    async def read(
        self, data: JSONBody[RepoReadRequest], agent: AgentDep, services: ServicesDep
    ) -> RepoReadResponse:
        reader = await repository_reader(agent, data.agent_id)
        return await services.snapshots.read(reader, data.objects)

    @get("/repo/objects", summary="The stored objects of one kind in this agent's repository")
    async def list_objects(
        self,
        agent: AgentDep,
        services: ServicesDep,
        kind: FromQuery[Literal["config", "data", "index", "snapshot"]],
        after: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 1000,
        agent_id: Annotated[str | None, QueryParameter(name="agentId", max_length=64)] = None,
    ) -> RepoListResponse:
        reader = await repository_reader(agent, agent_id)
        return await services.snapshots.list_objects(reader, kind, after, limit)
