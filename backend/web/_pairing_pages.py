"""``/pair``: the steps to connect a machine with a pairing code, for the link *Add a machine* gives
(open it on the new machine). Needs no sign-in and looks nothing up: it only repeats the code it
was given, so it reveals nothing about codes or agents."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import Template

from backend.api.deps import ServicesDep
from backend.services.pairing import format_code, normalise_code
from backend.web._agent_pages import server_url
from backend.web._render import page

__all__ = ["PairPage"]


class PairPage(Controller):
    path = "/pair"
    include_in_schema = False

    @get("/", name="pair")
    async def pair(
        self,
        request: Request[Any, Any, Any],
        services: ServicesDep,
        code: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> Template:
        raw = normalise_code(code or "")
        return page(
            request,
            "pair.html",
            user=None,
            services=services,
            code=format_code(raw) if raw else None,
            server_url=server_url(request, services),
        )
