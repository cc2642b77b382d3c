"""Backup history: every backup with its status, size, files, duration and errors (where it is
stored is on the backup's own page)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template

from backend.api.deps import ServicesDep
from backend.web._auth import PageUserDep, provide_page_user
from backend.web._render import page

__all__ = ["BackupPages"]

PAGE_SIZE = 25
Status = Literal["running", "completed", "failed", "cancelled", "interrupted", "expired"]


class BackupPages(Controller):
    path = "/backups"
    include_in_schema = False
    dependencies = {"user": Provide(provide_page_user)}

    @get("/", name="backups")
    async def backups(
        self,
        request: Request[Any, Any, Any],
        user: PageUserDep,
        services: ServicesDep,
        status: Annotated[str | None, QueryParameter(name="status")] = None,
        config: Annotated[str | None, QueryParameter(name="config")] = None,
        agent: Annotated[str | None, QueryParameter(name="agent")] = None,
        page_number: Annotated[int | None, QueryParameter(name="page", ge=1, le=100_000)] = None,
    ) -> Template:
        configs = await services.configs.list_configs(user)
        agents = await services.agents.list_agents(user)
        # Unknown filter values (a stale link) are dropped rather than answered with an error.
        status = status if status in get_args(Status) else None
        config = config if config in {c.id for c in configs} else None
        agent = agent if agent in {a.id for a in agents} else None
        number = page_number or 1
        backups, total = await services.history.list_backups(
            user,
            config_id=config,
            agent_id=agent,
            status=status,
            limit=PAGE_SIZE,
            offset=(number - 1) * PAGE_SIZE,
        )
        query = urlencode(
            {k: v for k, v in (("status", status), ("config", config), ("agent", agent)) if v}
        )
        return page(
            request,
            "backups.html",
            user=user,
            services=services,
            live={"backups": "partials/backups_table.html"},
            nav="backups",
            backups=backups,
            total=total,
            page_number=number,
            pages=max(1, -(-total // PAGE_SIZE)),
            query=query,
            filters={"status": status or "", "config": config or "", "agent": agent or ""},
            configs=configs,
            agents=agents,
            agent_names={a.id: a.name for a in agents},
        )

    @get("/{backup_id:str}", name="backup")
    async def backup(
        self,
        request: Request[Any, Any, Any],
        backup_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template:
        backup = await services.history.get(user, backup_id)
        agents = await services.agents.list_agents(user)
        return page(
            request,
            "backup.html",
            user=user,
            services=services,
            live={"backup": "partials/backup_detail.html"},
            nav="backups",
            backup=backup,
            agent_names={a.id: a.name for a in agents},
        )

    @get("/{backup_id:str}/download", name="backup_download")
    async def download(
        self, backup_id: FromPath[str], user: PageUserDep, services: ServicesDep
    ) -> Redirect:
        """To a pre-signed GET URL (valid for ``BACKAPP_PRESIGN_SECONDS``) of the archive."""
        download = await services.restores.download(user, backup_id)
        return Redirect(download.url, status_code=303)
