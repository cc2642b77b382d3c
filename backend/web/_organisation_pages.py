"""Organisation recovery in the web console (docs/recovery.md): an administrator pastes the public
key of an organisation code made on their own machine, or removes it. The code itself never comes
here; a pasted code or identity is refused and not stored."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.response import Redirect, Template

from backend.api.deps import ServicesDep
from backend.errors import DomainError
from backend.web._agent_pages import _agents_page
from backend.web._auth import PageController, PageUserDep
from backend.web._forms import text
from backend.web._render import redirect

__all__ = ["OrganisationPages"]


class OrganisationPages(PageController):
    path = "/agents/organisation-recovery"

    @post("/", status_code=303)
    async def set_key(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template | Redirect:
        """Set up or replace the organisation key (administrators only)."""
        form = await request.form()
        try:
            await services.organisation.set_key(user, text(form, "org_public_key", 200))
        except DomainError as exc:
            message = exc.detail.removeprefix("publicKey: ")
            return await _agents_page(
                request,
                user,
                services,
                errors={"org_public_key": message[:1].upper() + message[1:]},
                status_code=exc.status_code,
            )
        return redirect("/agents#organisation-recovery", services)

    @post("/remove", status_code=303)
    async def remove(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template | Redirect:
        """Remove the organisation key (administrators only)."""
        try:
            await services.organisation.remove(user)
        except DomainError as exc:
            return await _agents_page(
                request,
                user,
                services,
                errors={"org_public_key": exc.detail},
                status_code=exc.status_code,
            )
        return redirect("/agents#organisation-recovery", services)
