"""Agents: list, register (the key shown once), status, logs, rename, deactivate, delete, assign."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Request, get, post
from litestar.datastructures import Cookie, FormMultiDict
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from backend.api.deps import AfterQuery, SearchQuery, ServicesDep
from backend.errors import DomainError
from backend.schemas import ConfigPatch
from backend.services import CurrentUser, Services
from backend.services.cursors import Cursor
from backend.services.history import BackupFilter
from backend.services.pairing import IssuedCode
from backend.web._auth import PageController, PageUserDep
from backend.web._format import parse_iso
from backend.web._forms import field_errors, is_uuid, text
from backend.web._limits_form import (
    DAY_CHOICES,
    LIMIT_FIELDS,
    limits_from_form,
    limits_values,
    parallel_from_form,
    parallel_text,
)
from backend.web._render import page, redirect, search_listing
from desktop_agent.engine.bandwidth import BandwidthLimits

__all__ = ["AgentPages", "NEW_KEY_COOKIE"]

NEW_KEY_COOKIE = "backapp_new_key"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_PAGE = 25
LOG_CURSOR = "agent_logs"
"""The signed cursor kind of an agent's log pages."""
AGENT_PAGE = 50
ASSIGN_CHOICES = 100
REPLACE_CHOICES = 10
PLATFORMS = {"": "Not set", "linux": "Linux", "darwin": "macOS", "win32": "Windows"}


def _new_key_cookie(agent_id: str, key: str, services: Services) -> Cookie:
    """Carries a new key from the registration POST to the agent's page, once.

    The server keeps only the key's digest, so the key can't be shown after a redirect unless the
    browser brings it back: an HttpOnly, SameSite=Strict session cookie scoped to that one page,
    which the page deletes as it shows the key (a reload finds it gone)."""
    return Cookie(
        key=NEW_KEY_COOKIE,
        value=key,
        max_age=None if key else 0,
        httponly=True,
        samesite="strict",
        secure=services.settings.secure_cookies,
        path=f"/agents/{agent_id}",
    )


def server_url(request: Request[Any, Any, Any], services: Services) -> str:
    """What an agent should be told to connect to: the public URL, else what this browser used."""
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


async def _agents_page(
    request: Request[Any, Any, Any],
    user: CurrentUser,
    services: Services,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    search: str = "",
    after: str | None = None,
    pairing: IssuedCode | None = None,
    machine: str = "",
    update_form: dict[str, str] | None = None,
) -> Template:
    """The agents page (also the answer of a form on it that failed, with ``errors``)."""
    policy = await services.releases.policy(user.id)
    position = services.cursors.position("agents", user.id, after)
    agents, more = await services.agents.page_agents(
        user, search=search or None, after=position, limit=AGENT_PAGE
    )
    return page(
        request,
        "agents.html",
        user=user,
        services=services,
        status_code=status_code,
        live={"agents": "partials/agents_table.html"},
        nav="agents",
        agents=agents,
        **search_listing(services, "agents", user, search, position, more),
        platforms=PLATFORMS,
        values=values or {"name": "", "platform": ""},
        errors=errors or {},
        recovery=await services.recovery.state(user.id),
        organisation=await services.organisation.state(),
        pairing=pairing,
        machine=machine,
        code_minutes=services.settings.pairing_code_minutes,
        update_form=update_form or {"policy": policy.policy, "version": policy.version or ""},
        update_policy=policy,
        releases=await services.releases.releases(),
        server_url=server_url(request, services),
        pair_link=(
            f"{server_url(request, services)}/pair?{urlencode({'code': pairing.code})}"
            if pairing
            else None
        ),
    )


async def _agent_page(
    request: Request[Any, Any, Any],
    user: CurrentUser,
    services: Services,
    agent_id: FromPath[str],
    *,
    level: str | None = None,
    before: str | None = None,
    after: str | None = None,
    rename: str | None = None,
    replaces: str = "",
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    limits_form: FormMultiDict | None = None,
) -> Template:
    agent = await services.agents.get(user, agent_id)
    inherits, inherited_by = await services.inheritance.marks(user, agent.id)
    # A search, not a list of every agent: a fleet is too large for one dropdown.
    candidates = await services.inheritance.candidates(
        user, agent.id, replaces, limit=REPLACE_CHOICES
    )
    cookies: list[Cookie] = []
    new_key = None
    offered = request.cookies.get(NEW_KEY_COOKIE)
    if offered is not None:
        cookies.append(_new_key_cookie(agent.id, "", services))
        if await services.agents.key_matches(user, agent.id, offered):
            new_key = offered
    level = level if level in LOG_LEVELS else None
    before_dt: datetime | None = parse_iso(before) if before else None
    older: str | None = None
    if after or before_dt is None:
        # Keyset paging; ``before`` (a time) is what older links carry, still answered.
        position = services.cursors.position(LOG_CURSOR, user.id, after)
        logs, next_cursor = await services.agents.page_logs(
            user, agent.id, level=level, limit=LOG_PAGE, after=position
        )
        older = services.cursors.next_after(LOG_CURSOR, user.id, next_cursor)
    else:
        logs, older_time = await services.agents.logs(
            user, agent.id, level=level, limit=LOG_PAGE, before=before_dt
        )
        if older_time is not None and logs:
            last = logs[-1]
            at = parse_iso(last.timestamp)
            if at is not None:
                cursor = Cursor(at=at, id=uuid.UUID(last.id))
                older = services.cursors.encode(LOG_CURSOR, user.id, cursor)
    assigned = await services.configs.list_configs(user, agent.id)
    # The assign list offers a page of the other configurations, not every one of a fleet.
    others, _ = await services.configs.page_configs(user, limit=ASSIGN_CHOICES + len(assigned))
    assignable = [c for c in others if c.agent_id != agent.id][:ASSIGN_CHOICES]
    backups, backup_total = await services.history.list_backups(
        user, BackupFilter(agent_id=agent.id), limit=5
    )
    # Log lines link the configuration they are about, by name: only those this page shows.
    logged = {
        str(e.metadata["configId"])
        for e in logs
        if e.metadata and isinstance(e.metadata.get("configId"), str)
    }
    known = {c.id: c.name for c in assigned}
    named = await services.configs.by_ids(user, [i for i in logged - set(known) if is_uuid(i)])
    config_names = {**known, **{c.id: c.name for c in named}}
    live = {"status": "partials/agent_status.html", "backups": "partials/agent_backups.html"}
    paged = before_dt is not None or bool(after)
    if not paged:
        live["logs"] = "partials/agent_logs.html"
    return page(
        request,
        "agent.html",
        user=user,
        services=services,
        status_code=status_code,
        cookies=cookies,
        live=live,
        nav="agents",
        agent=agent,
        new_key=new_key,
        server_url=server_url(request, services),
        assigned=assigned,
        assignable=assignable,
        config_names=config_names,
        logs=logs,
        older=older,
        level=level or "",
        levels=LOG_LEVELS,
        paged=paged,
        backups=backups,
        backup_total=backup_total,
        rename=agent.name if rename is None else rename,
        inherits=inherits,
        inherited_by=inherited_by,
        replaces=replaces,
        candidates=candidates,
        errors=errors or {},
        limits=limits_values(agent.limits, limits_form, agent.parallel_backups),
        limits_text=_limits_text(agent.limits),
        parallel_text=parallel_text(agent.parallel_backups),
        day_choices=DAY_CHOICES,
    )


def _limits_text(limits: dict[str, Any] | None) -> str:
    parsed = BandwidthLimits.parse(limits) if limits else None
    return parsed.describe() if parsed is not None else "No limits: backups use the whole line."


class AgentPages(PageController):
    path = "/agents"

    @get("/", name="agents")
    async def agents(
        self,
        request: Request[Any, Any, Any],
        user: PageUserDep,
        services: ServicesDep,
        q: SearchQuery = None,
        after: AfterQuery = None,
    ) -> Template:
        """One page of agents (keyset: ``after``), searchable by name (``q``)."""
        return await _agents_page(request, user, services, search=(q or "").strip(), after=after)

    @post("/", status_code=303)
    async def register(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template | Redirect:
        form = await request.form()
        values = {"name": text(form, "name", 1000).strip(), "platform": text(form, "platform", 40)}
        errors: dict[str, str] = {}
        if not values["name"]:
            errors["name"] = "Give the agent a name, such as the machine's."
        elif len(values["name"]) > 200:
            errors["name"] = "At most 200 characters."
        if values["platform"] not in PLATFORMS:
            errors["platform"] = "Choose one of the listed platforms."
        if not errors:
            try:
                agent, key = await services.agents.register(
                    user, values["name"], values["platform"] or None
                )
            except DomainError as exc:
                errors = field_errors(exc, "name")
            else:
                return redirect(
                    f"/agents/{agent.id}",
                    services,
                    cookies=[_new_key_cookie(agent.id, key, services)],
                )
        return await _agents_page(
            request, user, services, values=values, errors=errors, status_code=400
        )

    @post("/add-machine", status_code=200)
    async def add_machine(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template:
        """*Add a machine*: a one-time pairing code, shown on this answer only (never stored)."""
        form = await request.form()
        name = text(form, "machine", 1000).strip()
        try:
            issued = await services.pairing.issue(user, name)
        except DomainError as exc:
            errors = {"machine": exc.detail.removeprefix("name: ").capitalize()}
            return await _agents_page(
                request, user, services, errors=errors, machine=name, status_code=400
            )
        return await _agents_page(request, user, services, pairing=issued)

    @get("/{agent_id:str}", name="agent")
    async def agent(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
        level: FromQuery[str | None] = None,
        before: FromQuery[str | None] = None,
        replaces: SearchQuery = None,
        after: AfterQuery = None,
    ) -> Template:
        """An agent: its status, configs, newest backups and its log (keyset pages: ``after``)."""
        return await _agent_page(
            request,
            user,
            services,
            agent_id,
            level=level,
            before=before,
            after=after,
            replaces=(replaces or "").strip(),
        )

    @post("/{agent_id:str}/inherit", status_code=303)
    async def inherit(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template | Redirect:
        """ "This machine replaces …": the owner's inheritance mark."""
        agent = await services.agents.get(user, agent_id)
        form = await request.form()
        from_id = text(form, "from_agent_id", 100)
        try:
            mark, _ = await services.inheritance.mark(user, agent.id, from_id)
        except DomainError as exc:
            if not exc.detail.startswith("fromAgentId"):
                raise
            return await _agent_page(
                request,
                user,
                services,
                agent.id,
                replaces=text(form, "replaces", 200),
                errors={"from_agent_id": exc.detail.removeprefix("fromAgentId: ")},
                status_code=exc.status_code,
            )
        return redirect(
            f"/agents/{agent.id}#replaces",
            services,
            flash=f"“{agent.name}” now replaces “{mark.from_agent_name}”: it can list and "
            "restore that machine's backups.",
        )

    @post("/{agent_id:str}/inherit/{from_agent_id:str}/remove", status_code=303)
    async def uninherit(
        self,
        agent_id: FromPath[str],
        from_agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Redirect:
        agent = await services.agents.get(user, agent_id)
        await services.inheritance.unmark(user, agent.id, from_agent_id)
        return redirect(
            f"/agents/{agent.id}#replaces",
            services,
            flash=f"“{agent.name}” no longer replaces that machine: it cannot read its backups.",
        )

    @post("/{agent_id:str}/rename", status_code=303)
    async def rename(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template | Redirect:
        form = await request.form()
        name = text(form, "name", 1000).strip()
        errors: dict[str, str] = {}
        if not name:
            errors["name"] = "The name must not be blank."
        elif len(name) > 200:
            errors["name"] = "At most 200 characters."
        else:
            try:
                agent = await services.agents.update(user, agent_id, name=name, active=None)
            except DomainError as exc:
                if exc.status_code == 404:
                    raise
                errors = field_errors(exc, "name")
            else:
                return redirect(
                    f"/agents/{agent.id}", services, flash=f"Renamed to “{agent.name}”."
                )
        return await _agent_page(
            request, user, services, agent_id, rename=name, errors=errors, status_code=400
        )

    @post("/{agent_id:str}/limits", status_code=303)
    async def limits(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template | Redirect:
        """Set the agent's bandwidth limits and ``parallelBackups``; a bad value shows the form
        again, nothing changed."""
        form = await request.form()
        current = await services.agents.get(user, agent_id)
        try:
            agent = await services.agents.update(
                user,
                agent_id,
                name=None,
                active=None,
                limits=limits_from_form(form, current.limits),
                parallel_backups=parallel_from_form(form),
            )
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            where, _, detail = exc.detail.partition(": ")  # "limits.upload: must be …"
            field = LIMIT_FIELDS.get(where, "limits")
            detail = detail or exc.detail
            errors = {field: detail[:1].upper() + detail[1:]}
            return await _agent_page(
                request,
                user,
                services,
                agent_id,
                errors=errors,
                status_code=400,
                limits_form=form,
            )
        return redirect(
            f"/agents/{agent.id}#bandwidth",
            services,
            flash="Bandwidth and parallel backups saved: the agent applies them within a minute.",
        )

    @post("/{agent_id:str}/deactivate", status_code=303)
    async def deactivate(
        self, agent_id: FromPath[str], user: PageUserDep, services: ServicesDep
    ) -> Redirect:
        agent = await services.agents.update(user, agent_id, name=None, active=False)
        return redirect(
            f"/agents/{agent.id}",
            services,
            flash=f"“{agent.name}” is deactivated: its API key is refused until you reactivate it.",
        )

    @post("/{agent_id:str}/activate", status_code=303)
    async def activate(
        self, agent_id: FromPath[str], user: PageUserDep, services: ServicesDep
    ) -> Redirect:
        agent = await services.agents.update(user, agent_id, name=None, active=True)
        return redirect(f"/agents/{agent.id}", services, flash=f"“{agent.name}” is active again.")

    @get("/{agent_id:str}/delete", name="agent_delete")
    async def confirm_delete(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template:
        agent = await services.agents.get(user, agent_id)
        configs = await services.configs.list_configs(user, agent.id)
        _, inherited_by = await services.inheritance.marks(user, agent.id)
        return page(
            request,
            "agent_delete.html",
            user=user,
            services=services,
            nav="agents",
            agent=agent,
            configs=configs,
            inherited_by=inherited_by,
        )

    @post("/{agent_id:str}/delete", status_code=303)
    async def delete(
        self, agent_id: FromPath[str], user: PageUserDep, services: ServicesDep
    ) -> Redirect:
        agent = await services.agents.get(user, agent_id)
        await services.agents.delete(user, agent.id)
        return redirect(
            "/agents",
            services,
            flash=f"Deleted “{agent.name}”. Its API key no longer works; its backups stay listed.",
        )

    @post("/{agent_id:str}/assign", status_code=303)
    async def assign(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template | Redirect:
        agent = await services.agents.get(user, agent_id)
        form = await request.form()
        config_id = text(form, "config_id", 100)
        if not config_id:
            return await _agent_page(
                request,
                user,
                services,
                agent.id,
                errors={"config_id": "Choose a configuration to assign."},
                status_code=400,
            )
        config = await services.configs.update(
            user, config_id, ConfigPatch(execution_mode="agent", agent_id=agent.id)
        )
        return redirect(
            f"/agents/{agent.id}", services, flash=f"“{config.name}” now runs on “{agent.name}”."
        )
