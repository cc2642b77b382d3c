"""The dashboard: "am I safe?" at a glance, refreshed live."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.response import Template

from backend.api.deps import ServicesDep
from backend.services.clock import utcnow
from backend.web._auth import PageUserDep, provide_page_user
from backend.web._config_pages import agent_names, page_rows
from backend.web._health import Reason, Verdict, config_health, verdict
from backend.web._render import page

__all__ = ["DashboardPage"]

DASHBOARD_ROWS = 50
"""Configurations shown in full (those that need attention first); the rest are counted."""
DASHBOARD_AGENTS = 20
DASHBOARD_ALERTS = 20
"""The newest open alerts; a fleet can have thousands (every config of a machine that is off)."""


class DashboardPage(Controller):
    path = "/"
    include_in_schema = False
    dependencies = {"user": Provide(provide_page_user)}

    @get("/", name="dashboard")
    async def dashboard(
        self, request: Request[Any, Any, Any], user: PageUserDep, services: ServicesDep
    ) -> Template:
        """Counts over every config and agent from a few narrow set-based queries; the configs
        and agents that need attention first, a page of them in full."""
        now = utcnow()
        briefs = await services.configs.brief(user)
        last = await services.history.last_briefs(user)
        agent_briefs = await services.agents.briefs(user)
        agent_by_id = {a.id: a for a in agent_briefs}
        health = []
        for config in briefs:
            config_id = str(config["id"])
            found = last.get(config_id)
            agent = agent_by_id.get(str(config["agent"])) if config["agent"] else None
            health.append(
                config_health(
                    config_id,
                    config["execution_mode"],
                    agent,
                    found.last if found else None,
                    found.last_completed if found else None,
                    now,
                )
            )
        # Stable: configs of equal severity keep their list order (oldest first).
        shown = sorted(health, key=lambda h: h.severity)[:DASHBOARD_ROWS]
        severity = {h.config_id: h.severity for h in shown}
        configs = await services.configs.by_ids(user, [h.config_id for h in shown])
        configs.sort(key=lambda c: severity[c.id])
        rows = await page_rows(services, user, configs)
        attention = sum(1 for h in health if h.needs_attention)
        shown_attention = sum(1 for h in shown if h.needs_attention)
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
        rank = {"offline": 0, "error": 1, "idle": 2, "online": 3}
        listed = sorted(agent_briefs, key=lambda a: rank.get(a.status, 3))[:DASHBOARD_AGENTS]
        agents = await services.agents.by_ids(user, [a.id for a in listed])
        agents.sort(key=lambda a: rank.get(a.status, 3))
        running, _ = await services.history.page_backups(user, status="running", limit=10)
        return page(
            request,
            "dashboard.html",
            user=user,
            services=services,
            live={"overview": "partials/dashboard_overview.html"},
            nav="dashboard",
            agents=agents,
            agent_total=len(agent_briefs),
            agents_online=sum(1 for a in agent_briefs if a.status == "online"),
            rows=rows,
            config_total=len(health),
            healthy=sum(1 for h in health if h.safe),
            verdict=outcome,
            totals=await services.history.totals(user),
            running=running,
            agent_names=await agent_names(services, user, [b.agent_id for b in running]),
            alerts=await services.alerts.open_alerts(user, limit=DASHBOARD_ALERTS),
            proofs=await services.checks.proofs(user.id, [r.config.id for r in rows]),
        )
