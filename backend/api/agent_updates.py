"""The owner's update policy for their whole fleet: follow the newest build, pin one version, or
hold updates (docs/owner-api.md, "Agent updates"; docs/releases.md)."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.params import JSONBody

from backend.api.deps import AS_USER, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.release_schemas import ReleaseOut, UpdatePolicyIn, UpdatePolicyResponse
from backend.services import Services
from backend.services.clock import iso
from backend.services.releases import Policy


async def _response(services: Services, policy: Policy) -> UpdatePolicyResponse:
    releases = [
        ReleaseOut(
            platform=r.platform,
            version=r.version,
            size=r.size,
            sha256=r.sha256,
            created_at=iso(r.created_at),
        )
        for r in await services.releases.releases()
        if r.object_key  # an add still under way is not a release yet
    ]
    return UpdatePolicyResponse(policy=policy.policy, version=policy.version, releases=releases)


class AgentUpdateController(Controller):
    path = "/api/agent-updates"
    guards = [api_guard]
    tags = ["agents"]
    dependencies = AS_USER

    @get("/", summary="The fleet's update policy and the agent builds stored")
    async def show(self, user: UserDep, services: ServicesDep) -> UpdatePolicyResponse:
        return await _response(services, await services.releases.policy(user.id))

    @put("/", summary="Follow the newest build, pin a version (also downgrades), or hold updates")
    async def change(
        self, data: JSONBody[UpdatePolicyIn], user: UserDep, services: ServicesDep
    ) -> UpdatePolicyResponse:
        policy = await services.releases.set_policy(user.id, data.policy, data.version)
        return await _response(services, policy)
