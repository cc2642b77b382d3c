"""The agent API's compaction endpoints (docs/agent-api.md, "Extensions: compaction")."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from backend.api.deps import AS_AGENT, AgentDep, ServicesDep
from backend.compact_schemas import (
    CompactAbortRequest,
    CompactAbortResponse,
    CompactCommitRequest,
    CompactCommitResponse,
    CompactObjectsRequest,
    CompactStartRequest,
    CompactStartResponse,
)
from backend.snapshot_schemas import ObjectsResponse


class AgentCompactionController(Controller):
    path = "/api/agent/repo/compact"
    tags = ["agent", "snapshots"]
    dependencies = AS_AGENT

    @post(
        "/start",
        status_code=HTTP_200_OK,
        summary="Start compacting this agent's repository: its live snapshots and packs",
    )
    async def start(
        self,
        agent: AgentDep,
        services: ServicesDep,
        data: JSONBody[CompactStartRequest | None] = None,
    ) -> CompactStartResponse:
        return await services.compaction.start(agent)

    @post(
        "/objects",
        status_code=HTTP_200_OK,
        summary="Pre-signed PUTs for a compaction's new packs and index objects (batch)",
    )
    async def objects(
        self, data: JSONBody[CompactObjectsRequest], agent: AgentDep, services: ServicesDep
    ) -> ObjectsResponse:
        return ObjectsResponse(objects=await services.compaction.objects(agent, data))

    @post(
        "/commit",
        status_code=HTTP_200_OK,
        summary="Switch the snapshots to the new packs; the old ones are pruned after a grace",
    )
    async def commit(
        self, data: JSONBody[CompactCommitRequest], agent: AgentDep, services: ServicesDep
    ) -> CompactCommitResponse:
        return await services.compaction.commit(agent, data)

    @post("/abort", status_code=HTTP_200_OK, summary="Give a compaction up; nothing changes")
    async def abort(
        self, data: JSONBody[CompactAbortRequest], agent: AgentDep, services: ServicesDep
    ) -> CompactAbortResponse:
        return CompactAbortResponse(status=await services.compaction.abort(agent, data))
