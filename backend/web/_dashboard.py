"""The dashboard: "am I safe?" at a glance, refreshed live."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.response import Template

from backend.api.deps import ServicesDep
from backend.services.clock import utcnow
from backend.web._auth import PageUserDep, provide_page_user
from backend.web._health import config_rows, verdict
from backend.web._render import page

__all__ = ["DashboardPage"]


class DashboardPage(Controller):
    path = "/"
    include_in_schema = False
    dependencies = {"user": Provide(provide_page_user)}

    @get("/", name="dashboard")
    async def dashboard(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template:
        now = utcnow()
        agents = await services.agents.list_agents(user)
        configs = await services.configs.list_configs(user)
        rows = config_rows(configs, agents, await services.history.last_backups(user), now)
        running, _ = await services.history.list_backups(user, status="running", limit=10)
        assigned = {c.agent_id for c in configs if c.agent_id}
        return page(
            request,
            "dashboard.html",
            user=user,
            services=services,
            live={"overview": "partials/dashboard_overview.html"},
            nav="dashboard",
            agents=agents,
            assigned=assigned,
            rows=rows,
            verdict=verdict(rows, now),
            totals=await services.history.totals(user),
            running=running,
            agent_names={a.id: a.name for a in agents},
            alerts=await services.alerts.open_alerts(user),
        )
