"""The dashboard's figures for one owner, in O(page) rows, whatever the fleet.

Each config's health (the rules of ``backend/web/_health.py``: failing, a blocking problem, no or
an old verified backup, an offline agent, running, fine) is ranked by a *severity*, worst first,
stored on the config row (``severity``, kept by ``backend/services/last_backup.py``; "its agent
is offline" from the agent's ``offline_since``, stored by the presence round and cleared by a
heartbeat, ``backend/services/offline.py``) and indexed with the user and the list order: the
counts per severity are kept by the database (``backapp_config_severity_counts``, migration
``backups_2026_12_02t17_40_00``) and the worst configs are the first entries of the index. The
one part that moves with time alone (a verified backup turning a day old) is corrected on the
way: the alert round moves those configs down every round, and until it has, they are counted
(over a ``("user", severity, last_ok_at)`` index: the configs without a recent verified backup
only) and shown by their ``last_ok_at``.

The agents are counted from the ``("user", active, last_seen)`` index, and a page of those that
need attention is read: the silent ones marked offline first (one-shot agents among them: each
one's schedules say whether it is idle or offline), then those not marked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.backups.tables import BackupConfig
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentBrief, AgentService
from backend.services.last_backup import (
    FAILING,
    FINE,
    OFFLINE,
    OVERDUE_AFTER,
    RUNNING,
    STALE,
)

__all__ = ["ATTENTION", "OVERDUE_AFTER", "FleetOverview", "OverviewService"]

ATTENTION = 4
"""Severities below this need attention (3 is "its agent is offline")."""
AGENT_RANK = {"offline": 0, "error": 1, "idle": 2, "online": 3}


@dataclass(frozen=True)
class FleetOverview:
    config_total: int
    healthy: int
    """Configs with a recent verified backup whose newest attempt did not fail."""
    attention: int
    """Configs that need attention (severity below :data:`ATTENTION`)."""
    shown: list[tuple[str, int]]
    """Up to ``rows`` (config id, severity), worst first, then in list order."""
    agent_total: int
    agents_online: int
    agents: list[AgentBrief]
    """Up to ``agent_rows`` agents, those that need attention first."""


class OverviewService:
    def __init__(self, agents: AgentService) -> None:
        self.agents = agents

    async def overview(
        self, user: CurrentUser, now: datetime, *, rows: int, agent_rows: int
    ) -> FleetOverview:
        """Counts over every config and agent of ``user``; the worst ``rows`` configs and the
        ``agent_rows`` agents to show. A constant number of statements reading O(shown) rows."""
        silent_since = now - timedelta(seconds=self.agents.settings.offline_after_seconds)
        cutoff = now - OVERDUE_AFTER

        # Counts per stored severity (kept by the database, ``backapp_config_severity_counts``),
        # and how many of each have no verified backup younger than a day (none, or an older
        # one): two ranges of the ``("user", severity, last_ok_at)`` index per severity,
        # O(configs without one), not O(configs).
        late = 'SELECT COUNT(*) FROM backapp_backup_config b WHERE b."user" = c."user"'
        late += " AND b.severity = c.severity AND b.last_ok_at"
        per: dict[int, tuple[int, int]] = {
            int(r["severity"]): (int(r["n"]), int(r["n"]) - int(r["late"]))
            for r in await BackupConfig.raw(
                f"SELECT c.severity, c.n, ({late} IS NULL) + ({late} < {{}}) AS late"
                ' FROM backapp_config_severity_counts c WHERE c."user" = {} AND c.n > 0',
                cutoff,
                user.id,
            )
        }
        total = sum(n for n, _ in per.values())
        # Offline, running or fine when last written, but their verified backup aged past a day
        # since: stale (worse than offline).
        aged = sum(n - ok for s, (n, ok) in per.items() if s >= OFFLINE)
        bad = sum(per.get(s, (0, 0))[0] for s in range(STALE + 1)) + aged
        offline = per.get(OFFLINE, (0, 0))[1]
        healthy = sum(ok for s, (_, ok) in per.items() if s != FAILING)

        # The page: the worst stored severities first, by the index.
        shown: list[tuple[str, int]] = [
            (str(r["id"]), int(r["severity"]))
            for r in await BackupConfig.raw(
                'SELECT id, severity FROM backapp_backup_config WHERE "user" = {}'
                f" AND severity <= {STALE} ORDER BY severity, created_at, id LIMIT {{}}",
                user.id,
                rows,
            )
        ]
        if aged and len(shown) < rows:
            # Those that became stale since the last alert round, among the stale ones.
            stale = [(i, sev) for i, sev in shown if sev == STALE]
            crossed = await BackupConfig.raw(
                'SELECT id, created_at FROM backapp_backup_config WHERE "user" = {}'
                f" AND severity IN ({OFFLINE}, {RUNNING}, {FINE}) AND last_ok_at < {{}}"
                " ORDER BY created_at, id LIMIT {}",
                user.id,
                cutoff,
                rows,
            )
            order = await self._created(stale)
            merged = sorted(
                [(order[i], i) for i, _ in stale]
                + [((r["created_at"], str(r["id"])), str(r["id"])) for r in crossed],
                key=lambda item: (str(item[0][0]), item[0][1]),
            )
            shown = [(i, s) for i, s in shown if s != STALE]
            shown += [(i, STALE) for _, i in merged][: rows - len(shown)]
        # Then offline, running and fine (each with a verified backup younger than a day), in
        # list order: one range of the index each.
        for severity in (OFFLINE, RUNNING, FINE):
            if len(shown) >= rows or (severity == OFFLINE and not offline):
                continue
            shown += [
                (str(r["id"]), severity)
                for r in await BackupConfig.raw(
                    'SELECT id FROM backapp_backup_config WHERE "user" = {} AND severity = {}'
                    " AND last_ok_at >= {} ORDER BY created_at, id LIMIT {}",
                    user.id,
                    severity,
                    cutoff,
                    rows - len(shown),
                )
            ]

        agent_total, silent_total = await self.agents.count_silent(user, silent_since)
        # Agents that need attention first: a page of the silent agents that are offline for
        # sure, of the silent one-shot agents marked offline, and of the others (between their
        # runs, or not marked yet), each by its status, in list order within a status.
        candidates: list[AgentBrief] = []
        for oneshot, marked in ((False, None), (True, True), (True, False)):
            candidates += await self.agents.briefs(
                user, silent_since=silent_since, oneshot=oneshot, marked=marked, limit=agent_rows
            )
        heard = [a for a in candidates if a.status == "online"]  # by this process, lately
        listed = sorted(
            (a for a in candidates if a.status != "online"),
            key=lambda a: (AGENT_RANK.get(a.status, 3), a.created_at, a.id),
        )[:agent_rows]
        if len(listed) < agent_rows:
            fresh = await self.agents.online_briefs(user, silent_since, agent_rows)
            listed += (fresh + heard)[: agent_rows - len(listed)]
        return FleetOverview(
            config_total=total,
            healthy=healthy,
            attention=bad + offline,
            shown=shown,
            agent_total=agent_total,
            agents_online=agent_total - silent_total + len(heard),
            agents=listed,
        )

    @staticmethod
    async def _created(shown: list[tuple[str, int]]) -> dict[str, tuple[Any, str]]:
        """The list-order key (created_at, id) of configs already on the page."""
        if not shown:
            return {}
        ids = [uuid.UUID(i) for i, _ in shown]
        marks = ", ".join("{}" for _ in ids)
        return {
            str(r["id"]): (r["created_at"], str(r["id"]))
            for r in await BackupConfig.raw(
                f"SELECT id, created_at FROM backapp_backup_config WHERE id IN ({marks})", *ids
            )
        }
