"""The dashboard: "am I safe?" at a glance, refreshed live."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Template

from backend.api.deps import ServicesDep
from backend.services.clock import utcnow
from backend.services.history import BackupFilter
from backend.services.overview import ATTENTION, OverviewService
from backend.web._auth import PageController, PageUserDep
from backend.web._config_pages import agent_names, page_rows
from backend.web._health import Reason, Verdict, verdict
from backend.web._render import page

__all__ = ["DashboardPage"]

DASHBOARD_ROWS = 50
"""Configurations shown in full (those that need attention first); the rest are counted."""
DASHBOARD_AGENTS = 20
DASHBOARD_ALERTS = 20
"""The newest open alerts; a fleet can have thousands (every config of a machine that is off)."""


class DashboardPage(PageController):
    path = "/"

    @get("/", name="dashboard")
    async def dashboard(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template:
        """Counts over every config and agent from a few set-based queries; the configs and
        agents that need attention first, a page of them in full. O(page + silent agents) rows,
        whatever the size of the fleet (``backend/services/overview.py``)."""
        now = utcnow()
        overview = await OverviewService(services.agents).overview(
            user, now, rows=DASHBOARD_ROWS, agent_rows=DASHBOARD_AGENTS
        )
        severity = dict(overview.shown)
        configs = await services.configs.by_ids(user, list(severity))
        order = {config_id: i for i, (config_id, _) in enumerate(overview.shown)}
        configs.sort(key=lambda c: order[c.id])
        rows = await page_rows(services, user, configs)
        attention = overview.attention
        shown_attention = sum(1 for _, sev in overview.shown if sev < ATTENTION)
        outcome = verdict(rows, now)
        if attention > shown_attention:
            outcome = Verdict(
                outcome.level,
                outcome.headline,
                [
                    *outcome.reasons,
                    Reason(
                        "warn",
                        f"… and {attention - shown_attention:,} more configurations need attention",
                        "/configs",
                    ),
                ],
            )
        # Agents that need attention first (offline), then the others (a one-shot agent between
        # its runs is "idle": expected to be silent).
        position = {a.id: i for i, a in enumerate(overview.agents)}
        agents = await services.agents.by_ids(user, list(position))
        agents.sort(key=lambda a: position[a.id])
        running, _ = await services.history.page_backups(
            user, BackupFilter(status="running"), limit=10
        )
        return page(
            request,
            "dashboard.html",
            user=user,
            services=services,
            live={"overview": "partials/dashboard_overview.html"},
            nav="dashboard",
            agents=agents,
            agent_total=overview.agent_total,
            agents_online=overview.agents_online,
            rows=rows,
            config_total=overview.config_total,
            healthy=overview.healthy,
            verdict=outcome,
            totals=await services.history.totals(user),
            running=running,
            agent_names=await agent_names(services, user, [b.agent_id for b in running]),
            alerts=await services.alerts.open_alerts(user, limit=DASHBOARD_ALERTS),
            proofs=await services.checks.proofs(user.id, [r.config.id for r in rows]),
        )
