"""Backup configurations: list, create/edit (execution mode, agent, sources, options), delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from backend.api.deps import AfterQuery, SearchQuery, ServicesDep
from backend.errors import DomainError
from backend.schemas import AgentOut, ConfigIn, ConfigOut
from backend.services import CurrentUser, Services
from backend.services.clock import utcnow
from backend.services.history import BackupFilter
from backend.web._auth import PageController, PageUserDep, safe_next
from backend.web._forms import ConfigForm, field_errors, is_uuid, text
from backend.web._health import ConfigRow, config_rows
from backend.web._render import page, redirect, search_listing

__all__ = ["ConfigPages"]

BACKUP_PAGE = 20
CONFIG_PAGE = 50
AGENT_CHOICES = 100
"""Agents the configuration form offers at once; past that, it offers a search."""


async def _form_page(
    request: Request[Any, Any, Any],
    user: CurrentUser,
    services: Services,
    form: ConfigForm,
    *,
    config_id: str | None = None,
    status_code: int = 200,
    agent_search: str = "",
) -> Template:
    # A page of agents (those matching ``agent_search``) and always the chosen one, not every
    # agent of a fleet; past a page, the form offers a search field.
    offered, more = await services.agents.page_agents(
        user, search=agent_search or None, limit=AGENT_CHOICES
    )
    chosen = await _agents_named(services, user, form.agent_id)
    agents = offered + [a for a in chosen if a.id not in {o.id for o in offered}]
    destination = None
    if config_id:
        destination = (await services.configs.get(user, config_id)).destination
    return page(
        request,
        "config_form.html",
        user=user,
        services=services,
        status_code=status_code,
        nav="configs",
        form=form,
        errors=form.errors,
        agents=agents,
        agent_search=agent_search,
        agent_search_shown=bool(agent_search) or more is not None,
        search_action=request.url.path,
        config_id=config_id,
        destination=destination,
        storage=services.storage,
    )


async def _submit(
    request: Request[Any, Any, Any],
    user: CurrentUser,
    services: Services,
    save: Callable[[ConfigIn], Awaitable[ConfigOut]],
    done: str,
    *,
    config_id: str | None = None,
) -> Template | Redirect:
    """The configuration form sent (a new one or an edit): when it is valid and ``save`` takes
    it, go to the configuration saying ``done``; else the form again with its errors (400)."""
    form = ConfigForm.from_form(await request.form())
    data = form.validate({a.id for a in await _agents_named(services, user, form.agent_id)})
    if data is not None:
        try:
            saved = await save(data)
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            form = form.with_errors(field_errors(exc))
        else:
            return redirect(f"/configs/{saved.id}", services, flash=f"{done} “{saved.name}”.")
    return await _form_page(request, user, services, form, config_id=config_id, status_code=400)


async def _agents_named(services: Services, user: CurrentUser, agent_id: str) -> list[AgentOut]:
    """The agent ``agent_id`` of this user, as a list: empty when it is not one (or not theirs)."""
    return await services.agents.by_ids(user, [agent_id]) if is_uuid(agent_id) else []


async def page_rows(
    services: Services, user: CurrentUser, configs: list[ConfigOut]
) -> list[ConfigRow]:
    """The health rows of a page of configs: their newest backups and their agents, read in one
    statement each, whatever the size of the fleet."""
    ids = [c.id for c in configs]
    last = await services.history.last_backups(user, ids)
    agents = await services.agents.briefs(user, ids=(c.agent_id for c in configs))
    return config_rows(configs, agents, last, utcnow())


async def agent_names(
    services: Services, user: CurrentUser, agent_ids: Iterable[str | None]
) -> dict[str, str]:
    """Names of the agents a page mentions (one query), not of every agent of the fleet."""
    return {a.id: a.name for a in await services.agents.briefs(user, ids=agent_ids)}


def _page_number(value: int | None) -> int:
    return max(1, min(value or 1, 100_000))


class ConfigPages(PageController):
    path = "/configs"

    @get("/", name="configs")
    async def configs(
        self,
        request: Request[Any, Any, Any],
        user: PageUserDep,
        services: ServicesDep,
        q: SearchQuery = None,
        after: AfterQuery = None,
    ) -> Template:
        """One page of configurations (keyset: ``after``), searchable by name (``q``)."""
        search = (q or "").strip()
        position = services.cursors.position("configs", user.id, after)
        configs, more = await services.configs.page_configs(
            user, search=search or None, after=position, limit=CONFIG_PAGE
        )
        rows = await page_rows(services, user, configs)
        return page(
            request,
            "configs.html",
            user=user,
            services=services,
            live={"configs": "partials/configs_table.html"},
            nav="configs",
            rows=rows,
            has_agents=bool(rows) or await services.agents.has_agents(user),
            **search_listing(services, "configs", user, search, position, more),
        )

    @get("/new", name="config_new")
    async def new(
        self,
        request: Request[Any, Any, Any],
        user: PageUserDep,
        services: ServicesDep,
        agent: FromQuery[str | None] = None,
        agent_q: SearchQuery = None,
    ) -> Template:
        named = await _agents_named(services, user, agent or "")
        first, _ = await services.agents.page_agents(user, limit=2)
        form = ConfigForm(
            execution_mode="agent" if first or agent else "server",
            agent_id=named[0].id if named else (first[0].id if len(first) == 1 else ""),
        )
        return await _form_page(request, user, services, form, agent_search=(agent_q or "").strip())

    @post("/new", status_code=303)
    async def create(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template | Redirect:
        return await _submit(
            request, user, services, lambda data: services.configs.create(user, data), "Created"
        )

    @get("/{config_id:str}", name="config")
    async def config(
        self,
        request: Request[Any, Any, Any],
        config_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
        page_number: Annotated[int | None, QueryParameter(name="page", ge=1, le=100_000)] = None,
    ) -> Template:
        config = await services.configs.get(user, config_id)
        [row] = await page_rows(services, user, [config])
        number = _page_number(page_number)
        backups, total = await services.history.list_backups(
            user,
            BackupFilter(config_id=config.id),
            limit=BACKUP_PAGE,
            offset=(number - 1) * BACKUP_PAGE,
        )
        return page(
            request,
            "config.html",
            user=user,
            services=services,
            live={
                "backups": "partials/config_backups.html",
                "health": "partials/config_health.html",
            },
            nav="configs",
            config=config,
            row=row,
            backups=backups,
            total=total,
            page_number=number,
            pages=max(1, -(-total // BACKUP_PAGE)),
            agent_names=await agent_names(
                services, user, [config.agent_id, *(b.agent_id for b in backups)]
            ),
            run_requests=await services.runs.list_for_config(user, config.id),
            proof=(await services.checks.proofs(user.id, [config.id])).get(config.id),
        )

    @get("/{config_id:str}/edit", name="config_edit")
    async def edit(
        self,
        request: Request[Any, Any, Any],
        config_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
        agent_q: SearchQuery = None,
    ) -> Template:
        config = await services.configs.get(user, config_id)
        return await _form_page(
            request,
            user,
            services,
            ConfigForm.from_config(config),
            config_id=config.id,
            agent_search=(agent_q or "").strip(),
        )

    @post("/{config_id:str}/edit", status_code=303)
    async def update(
        self,
        request: Request[Any, Any, Any],
        config_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template | Redirect:
        config = await services.configs.get(user, config_id)

        def save(data: ConfigIn) -> Awaitable[ConfigOut]:
            return services.configs.update(
                user, config.id, ConfigForm.patch_from(data, config.options)
            )

        return await _submit(request, user, services, save, "Saved", config_id=config.id)

    @post("/{config_id:str}/run", status_code=303)
    async def run_now(
        self,
        request: Request[Any, Any, Any],
        config_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Redirect:
        """Back Up Now: the request goes to the config's agent (or the server) at once."""
        config = await services.configs.get(user, config_id)
        form = await request.form()
        back = safe_next(text(form, "next", 2000) or f"/configs/{config.id}")
        try:
            await services.runs.request(user, config.id)
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            return redirect(back, services, flash=f"“{config.name}” was not started: {exc.detail}.")
        where = "this server" if config.execution_mode == "server" else "its agent"
        return redirect(back, services, flash=f"Back Up Now: “{config.name}” was sent to {where}.")

    @get("/{config_id:str}/delete", name="config_delete")
    async def confirm_delete(
        self,
        request: Request[Any, Any, Any],
        config_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template:
        config = await services.configs.get(user, config_id)
        _, total = await services.history.list_backups(
            user, BackupFilter(config_id=config.id), limit=1
        )
        return page(
            request,
            "config_delete.html",
            user=user,
            services=services,
            nav="configs",
            config=config,
            total=total,
        )

    @post("/{config_id:str}/delete", status_code=303)
    async def delete(
        self, config_id: FromPath[str], user: PageUserDep, services: ServicesDep
    ) -> Redirect:
        config = await services.configs.get(user, config_id)
        await services.configs.delete(user, config.id)
        return redirect("/configs", services, flash=f"Deleted “{config.name}”.")
