"""The agent API's recovery endpoints (docs/agent-api.md, "Extensions: recovery keys")."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get, post, put
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from backend.api.deps import AS_AGENT, AgentDep, ServicesDep
from backend.recovery_schemas import (
    OrganisationRestoreRequest,
    OrganisationSnapshotOut,
    OrganisationSnapshotRequest,
    RecoveryOut,
    RecoveryRotateRequest,
    RecoverySetupRequest,
    RepoKeyOut,
    RepoKeyPutRequest,
    RepoKeyPutResponse,
    RepoKeysOut,
)
from backend.schemas import RestoreResponse
from backend.services.organisation_access import organisation_reader, snapshot_key
from backend.services.organisation_recovery import OrganisationState
from backend.services.recovery import WrappedKeyIn
from backend.snapshot_schemas import RepoListResponse, RepoReadRequest, RepoReadResponse


def _state(state: RecoveryOut, org: OrganisationState | None = None) -> RecoveryOut:
    """The account's recovery state, with the organisation's key (``org``) when one is asked for."""
    if org is None:
        return state
    return msgspec.structs.replace(
        state,
        organisation_key=org.public_key,
        organisation_version=org.version,
        agent_organisation_key_version=org.agent_key_version,
    )


class AgentRecoveryController(Controller):
    path = "/api/agent"
    tags = ["agent", "recovery"]
    dependencies = AS_AGENT

    @get("/recovery", summary="Whether the account's recovery key is set up, and its public part")
    async def state(self, agent: AgentDep, services: ServicesDep) -> RecoveryOut:
        return _state(
            await services.recovery.state(agent.user_id, agent.id),
            await services.organisation.state(agent.id),
        )

    @post("/recovery", status_code=HTTP_201_CREATED, summary="Set up the recovery key (once)")
    async def setup(
        self, data: JSONBody[RecoverySetupRequest], agent: AgentDep, services: ServicesDep
    ) -> RecoveryOut:
        return _state(
            await services.recovery.setup(
                agent, public_key=data.public_key, salt=data.salt, kdf=data.kdf, proof=data.proof
            )
        )

    @post(
        "/recovery/rotate",
        status_code=HTTP_200_OK,
        summary="Replace the recovery key and every wrapped key of the account at once",
    )
    async def rotate(
        self, data: JSONBody[RecoveryRotateRequest], agent: AgentDep, services: ServicesDep
    ) -> RecoveryOut:
        return _state(
            await services.recovery.rotate(
                agent,
                old_version=data.old_version,
                old_proof=data.old_proof,
                public_key=data.public_key,
                salt=data.salt,
                kdf=data.kdf,
                proof=data.proof,
                keys=[WrappedKeyIn(k.agent_id, k.wrapped_key) for k in data.keys],
            )
        )

    @get("/recovery/keys", summary="Every wrapped repository key of the account (for a rotation)")
    async def keys(self, agent: AgentDep, services: ServicesDep) -> RepoKeysOut:
        return RepoKeysOut(keys=await services.recovery.list_keys(agent))

    @put("/repo/key", status_code=HTTP_200_OK, summary="Store this agent's wrapped repository key")
    async def put_key(
        self, data: JSONBody[RepoKeyPutRequest], agent: AgentDep, services: ServicesDep
    ) -> RepoKeyPutResponse:
        version = await services.recovery.put_key(
            agent, wrapped_key=data.wrapped_key, version=data.version
        )
        return RepoKeyPutResponse(version=version)

    @get("/repo/key", summary="A wrapped repository key (this agent's own unless agentId)")
    async def get_key(
        self,
        agent: AgentDep,
        services: ServicesDep,
        agent_id: Annotated[
            str | None, QueryParameter(name="agentId", min_length=1, max_length=64)
        ] = None,
    ) -> RepoKeyOut:
        return await services.recovery.get_key(agent, agent_id)

    @put(
        "/repo/organisation-key",
        status_code=HTTP_200_OK,
        summary="Store this agent's repository key wrapped for the organisation's recovery key",
    )
    async def put_organisation_key(
        self, data: JSONBody[RepoKeyPutRequest], agent: AgentDep, services: ServicesDep
    ) -> RepoKeyPutResponse:
        version = await services.organisation.put_wrapped(
            agent, wrapped_key=data.wrapped_key, version=data.version
        )
        return RepoKeyPutResponse(version=version)

    @post(
        "/organisation/restore",
        status_code=HTTP_200_OK,
        summary="An administrator's agent: a pre-signed GET of any encrypted archive of the server",
    )
    async def organisation_restore(
        self, data: JSONBody[OrganisationRestoreRequest], agent: AgentDep, services: ServicesDep
    ) -> RestoreResponse:
        row = await services.organisation.restorable(agent, data.backup_id)
        return RestoreResponse(restore=services.restores.signed_get(row))

    @post(
        "/organisation/snapshot",
        status_code=HTTP_200_OK,
        summary="An administrator's agent: the organisation-wrapped key of the repository that "
        "holds a snapshot of any account (recorded in that machine's log)",
    )
    async def organisation_snapshot(
        self, data: JSONBody[OrganisationSnapshotRequest], agent: AgentDep
    ) -> OrganisationSnapshotOut:
        return await snapshot_key(agent, data.backup_id)

    @post(
        "/organisation/repo/read",
        status_code=HTTP_200_OK,
        summary="An administrator's agent: pre-signed GETs for objects of a repository whose key "
        "is wrapped for the organisation key",
    )
    async def organisation_read(
        self, data: JSONBody[RepoReadRequest], agent: AgentDep, services: ServicesDep
    ) -> RepoReadResponse:
        reader = await organisation_reader(agent, data.agent_id)
        return await services.snapshots.read(reader, data.objects)

    @get(
        "/organisation/repo/objects",
        summary="An administrator's agent: the stored objects of one kind in such a repository",
    )
    async def organisation_objects(
        self,
        agent: AgentDep,
        services: ServicesDep,
        kind: FromQuery[Literal["config", "data", "index", "snapshot"]],
        agent_id: Annotated[str, QueryParameter(name="agentId", min_length=1, max_length=64)],
        after: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 1000,
    ) -> RepoListResponse:
        reader = await organisation_reader(agent, agent_id)
        return await services.snapshots.list_objects(reader, kind, after, limit)
