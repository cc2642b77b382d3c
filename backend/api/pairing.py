"""Pairing codes (docs/agent-api.md, "Pairing codes"): the owner asks for a short one-time code,
the new machine trades it for its own API key."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED

from backend.api.deps import AS_USER, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.pairing_schemas import PairingCodeOut, PairingCodeRequest, PairRequest, PairResponse
from backend.schemas import RegisteredAgent
from backend.services.clock import iso

__all__ = ["AgentPairController", "PairingCodeController"]


class PairingCodeController(Controller):
    path = "/api/agents/pairing-codes"
    guards = [api_guard]
    tags = ["agents"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        dependencies=AS_USER,
        summary="A one-time pairing code (15 minutes) that creates an agent when a machine uses it",
    )
    async def create(
        self, data: JSONBody[PairingCodeRequest], user: UserDep, services: ServicesDep
    ) -> PairingCodeOut:
        issued = await services.pairing.issue(user, data.name)
        return PairingCodeOut(
            code=issued.code, expires_at=iso(issued.expires_at) or "", name=issued.name
        )


class AgentPairController(Controller):
    path = "/api/agent"
    guards = [api_guard]
    tags = ["agent"]

    @post(
        "/pair",
        status_code=HTTP_201_CREATED,
        summary="Trade a pairing code for a new agent and its API key (no key needed; rate-limited)",
    )
    async def pair(
        self, request: Request[Any, Any, Any], data: JSONBody[PairRequest], services: ServicesDep
    ) -> PairResponse:
        client = request.client.host if request.client else "unknown"
        agent, key, _ = await services.pairing.redeem(data.code, client, data.platform)
        return PairResponse(
            agent=RegisteredAgent(id=agent.id, name=agent.name, api_key=key, status=agent.status)
        )
