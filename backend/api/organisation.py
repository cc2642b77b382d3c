"""The organisation recovery key, for administrators (session + CSRF; docs/recovery.md,
"Organisation recovery"). Everyone signed in may read whether it is on: it concerns their
privacy."""

from __future__ import annotations

from litestar import Controller, delete, get, put
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from backend.api.deps import AS_USER, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.recovery_schemas import OrganisationKeyRequest, OrganisationOut
from backend.services.organisation_recovery import OrganisationState


def _out(state: OrganisationState | None) -> OrganisationOut:
    if state is None:
        return OrganisationOut(configured=False)
    return OrganisationOut(
        configured=True,
        public_key=state.public_key,
        version=state.version,
        set_by=state.set_by,
        updated_at=state.updated_at,
        wrapped_agents=state.wrapped_agents,
    )


class OrganisationRecoveryController(Controller):
    path = "/api/recovery/organisation"
    guards = [api_guard]
    tags = ["recovery"]
    dependencies = AS_USER

    @get("/", summary="Whether organisation recovery is on, and its public key")
    async def state(self, user: UserDep, services: ServicesDep) -> OrganisationOut:
        return _out(await services.organisation.state())

    @put(
        "/",
        status_code=HTTP_200_OK,
        summary="Set up or replace the organisation recovery key (administrators; public key only)",
    )
    async def set_key(
        self, data: JSONBody[OrganisationKeyRequest], user: UserDep, services: ServicesDep
    ) -> OrganisationOut:
        return _out(await services.organisation.set_key(user, data.public_key))

    @delete("/", status_code=HTTP_204_NO_CONTENT, summary="Turn organisation recovery off")
    async def remove(self, user: UserDep, services: ServicesDep) -> None:
        await services.organisation.remove(user)
