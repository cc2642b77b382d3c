"""The *Agent updates* form on the agents page: the owner follows the newest signed build, pins
the fleet to one version (older agents move up, newer ones down), or holds updates
(docs/releases.md). The same rules as ``PUT /api/agent-updates``: a bad choice shows the form
again with the reason, nothing changed."""

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

__all__ = ["UpdatePages"]

_SAVED = {
    "latest": "Agents update themselves to the newest build.",
    "pin": "Agents move to version {version} (up or down).",
    "hold": "Agents stay on the version they run.",
}


class UpdatePages(PageController):
    path = "/agents/updates"

    @post("/", status_code=303)
    async def set_policy(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template | Redirect:
        """Store the fleet's update policy."""
        form = await request.form()
        policy = text(form, "update_policy", 16)
        # The version box belongs to ``pin``; left filled in for another choice, it is ignored.
        version = (text(form, "update_version", 64).strip() or None) if policy == "pin" else None
        try:
            saved = await services.releases.set_policy(user.id, policy, version)
        except DomainError as exc:
            field = "update_version" if exc.field == "version" else "update_policy"
            return await _agents_page(
                request,
                user,
                services,
                errors={field: exc.detail[:1].upper() + exc.detail[1:]},
                status_code=exc.status_code,
                update_form={"policy": policy, "version": version or ""},
            )
        return redirect(
            "/agents#updates",
            services,
            flash=_SAVED[saved.policy].format(version=saved.version),
        )
