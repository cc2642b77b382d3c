"""The web console: server-rendered pages over the same services as the JSON API.

Pages are Jinja2 templates (autoescaped) rendered by Litestar; ``static/app.js`` adds the small
things that need a script (live refresh of status regions, copy buttons, showing the agent picker
only for agent-based configs) and every page still reads without it.

    web_handlers()     the page routes and /static, for ``create_app``
    template_config()  Litestar's template config (the Jinja environment)
"""

from __future__ import annotations

from typing import Any

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from backend.web._account_pages import AccountPages
from backend.web._agent_pages import AgentPages
from backend.web._auth import web_exception_handlers
from backend.web._backup_pages import BackupPages
from backend.web._config_pages import ConfigPages
from backend.web._dashboard import DashboardPage
from backend.web._event_stream import events
from backend.web._organisation_pages import OrganisationPages
from backend.web._pairing_pages import PairPage
from backend.web._render import STATIC_DIR, template_config
from backend.web._restore_pages import RestorePages
from backend.web._update_pages import UpdatePages

__all__ = ["template_config", "web_handlers"]


def web_handlers() -> list[Any]:
    pages = Router(
        path="/",
        route_handlers=[
            AccountPages,
            DashboardPage,
            AgentPages,
            OrganisationPages,
            UpdatePages,
            ConfigPages,
            BackupPages,
            PairPage,
            RestorePages,
        ],
        exception_handlers=web_exception_handlers(),
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        # Asset URLs carry a content hash (``?v=…``), so browsers may keep them.
        cache_control=CacheControlHeader(max_age=86400, public=True),
        include_in_schema=False,
    )
    return [pages, static, events]
