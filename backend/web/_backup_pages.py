"""Backup history: every backup with its status, size, files, duration and errors (where it is
stored is on the backup's own page)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlencode

from litestar import Request, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template

from backend.api.deps import AfterQuery, ServicesDep
from backend.schemas import AgentOut, ConfigOut
from backend.services.history import BackupFilter
from backend.web._auth import PageController, PageUserDep
from backend.web._config_pages import agent_names
from backend.web._forms import is_uuid
from backend.web._render import page
from backend.web._restore_pages import restore_context

__all__ = ["BackupPages"]

PAGE_SIZE = 25
Status = Literal["running", "completed", "failed", "cancelled", "interrupted", "expired"]
COUNT_CAP = 1000
"""Matches are counted up to this many ("1,000+"): an exact count would read the whole history."""
FILTER_CHOICES = 100
"""How many configurations and agents the filter lists offer (a fleet has thousands)."""

T = TypeVar("T", ConfigOut, AgentOut)


def _with(offered: list[T], chosen: list[T]) -> list[T]:
    """The offered choices, and the chosen one too when it is not among them."""
    ids = {item.id for item in offered}
    return offered + [item for item in chosen if item.id not in ids]


class BackupPages(PageController):
    path = "/backups"

    @get("/", name="backups")
    async def backups(
        self,
        request: Request[Any, Any, Any],
        user: PageUserDep,
        services: ServicesDep,
        status: Annotated[str | None, QueryParameter(name="status")] = None,
        config: Annotated[str | None, QueryParameter(name="config")] = None,
        agent: Annotated[str | None, QueryParameter(name="agent")] = None,
        after: AfterQuery = None,
    ) -> Template:
        """One page of the history, newest first (keyset: ``after``), with filters. The cost of a
        page is the same at the start of a history of millions as at its end."""
        # Unknown filter values (a stale link) are dropped rather than answered with an error.
        status = status if status in get_args(Status) else None
        configs = await services.configs.by_ids(
            user, [config] if config and is_uuid(config) else []
        )
        agents = await services.agents.by_ids(user, [agent] if agent and is_uuid(agent) else [])
        config = configs[0].id if configs else None
        agent = agents[0].id if agents else None
        filters = BackupFilter(config_id=config, agent_id=agent, status=status)
        position = services.cursors.position("backups", user.id, after)
        backups, more = await services.history.page_backups(
            user, filters, after=position, limit=PAGE_SIZE
        )
        total, beyond = await services.history.count_backups(user, filters, cap=COUNT_CAP)
        query = urlencode(
            {k: v for k, v in (("status", status), ("config", config), ("agent", agent)) if v}
        )
        older = None
        cursor = services.cursors.next_after("backups", user.id, more)
        if cursor is not None:
            older = f"/backups?{query}{'&' if query else ''}{urlencode({'after': cursor})}"
        # The filter lists offer a page of configurations and agents, and always the chosen one.
        offered_configs, _ = await services.configs.page_configs(user, limit=FILTER_CHOICES)
        offered_agents, _ = await services.agents.page_agents(user, limit=FILTER_CHOICES)
        names = await agent_names(services, user, [agent, *(b.agent_id for b in backups)])
        return page(
            request,
            "backups.html",
            user=user,
            services=services,
            live={"backups": "partials/backups_table.html"},
            nav="backups",
            backups=backups,
            total=total,
            total_more=beyond,
            paged=position is not None,
            older=older,
            query=query,
            filters={"status": status or "", "config": config or "", "agent": agent or ""},
            configs=_with(offered_configs, configs),
            agents=_with(offered_agents, agents),
            agent_names=names,
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
        names = await agent_names(services, user, [backup.agent_id])
        return page(
            request,
            "backup.html",
            user=user,
            services=services,
            live={
                "backup": "partials/backup_detail.html",
                "restores": "partials/backup_restores.html",
            },
            nav="backups",
            backup=backup,
            agent_names=names,
            values={
                # The backup's own machine is the likely target: offered, not chosen for you.
                "machine": names.get(backup.agent_id or "", ""),
                "paths": "",
                "everything": "1",
                "target": "",
                "conflict": "keep-both",
            },
            errors={},
            **await restore_context(services, user, backup.id, backup.status),
        )

    @get("/{backup_id:str}/download", name="backup_download")
    async def download(
        self, backup_id: FromPath[str], user: PageUserDep, services: ServicesDep
    ) -> Redirect:
        """To a pre-signed GET URL (valid for ``BACKAPP_PRESIGN_SECONDS``) of the archive."""
        download = await services.restores.download(user, backup_id)
        return Redirect(download.url, status_code=303)
