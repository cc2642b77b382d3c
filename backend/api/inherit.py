"""The owner's inheritance endpoints: mark that a new machine replaces an old one, see and undo
the mark (docs/agent-api.md, "Extensions: inheriting an agent")."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from backend.api.deps import AS_USER, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.inheritance_schemas import (
    InheritanceListResponse,
    InheritanceResponse,
    InheritRequest,
)


class InheritanceController(Controller):
    path = "/api/agents/{agent_id:str}/inherit"
    guards = [api_guard]
    tags = ["agents"]
    dependencies = AS_USER

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Mark that this agent replaces another (inherits its backups); idempotent",
    )
    async def mark(
        self,
        agent_id: FromPath[str],
        data: JSONBody[InheritRequest],
        user: UserDep,
        services: ServicesDep,
    ) -> Response[InheritanceResponse]:
        mark, created = await services.inheritance.mark(user, agent_id, data.from_agent_id)
        return Response(
            InheritanceResponse(inheritance=mark),
            status_code=HTTP_201_CREATED if created else HTTP_200_OK,
        )

    @get("/", summary="The machines this agent replaces, and those that replace it")
    async def marks(
        self, agent_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> InheritanceListResponse:
        inherits, inherited_by = await services.inheritance.marks(user, agent_id)
        return InheritanceListResponse(inherits=inherits, inherited_by=inherited_by)

    @delete(
        "/{from_agent_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Undo the mark: this agent stops reading the other's backups",
    )
    async def unmark(
        self,
        agent_id: FromPath[str],
        from_agent_id: FromPath[str],
        user: UserDep,
        services: ServicesDep,
    ) -> None:
        await services.inheritance.unmark(user, agent_id, from_agent_id)
