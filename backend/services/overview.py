"""The dashboard's figures for one owner, in O(page) rows, whatever the fleet.

Each config's health (the rules of ``backend/web/_health.py``: failing, a blocking problem, no or
an old verified backup, an offline agent, running, fine) is ranked by a *severity*, worst first.
Every part of it but "its agent is offline" is stored on the config row (``severity``, kept by
``backend/services/last_backup.py``) and indexed with the user and the list order, so the counts
are one ``GROUP BY`` over the index and the worst configs are the first entries of it. The one
part that moves with time alone (a verified backup turning a day old) is corrected on the way:
the alert round moves those configs down every round, and until it has, they are counted and
shown by their ``last_ok_at`` (also in the index).

Whether an agent is offline depends on its heartbeats and, for a one-shot agent, on its
schedules: the configs of agents the database has not heard from for ``offline_after`` are
counted by one statement from the ``("user", active, last_seen)`` index of agents to their
configs (O(silent agents' configs) index entries, one row out), and only a page of them is
read. Silent one-shot agents are read in full (each one's schedules say whether it is idle or
offline): a fleet of cron agents is the one case that is still O(silent agents) rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.backups.tables import BackupConfig
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentBrief, AgentService
from backend.services.last_backup import (
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
SCAN = 200
"""Rows read per statement while a page skips configs it must leave out (idle one-shot agents'
configs, or those of offline agents among the fine ones)."""

_SILENT = (
    "a.active = {} AND (a.last_seen IS NULL OR a.last_seen < {}) AND c.execution_mode = 'agent'"
)
"""A config whose agent the database has not heard from lately (``c``: the config, ``a``: its
agent); its two placeholders take ``True`` and the moment since which it is silent."""
_ONESHOT = (
    "CASE WHEN COALESCE(a.mode, '') = 'oneshot' AND a.last_seen IS NOT NULL THEN 1 ELSE 0 END"
)
"""1 for an agent whose silence may be expected (see ``services/presence.py``)."""


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


async def _keyset(
    sql: str, args: list[Any], want: int, keep: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The first ``want`` rows of ``sql`` (ordered by ``c.created_at, c.id``, ending in a
    ``WHERE``) that ``keep`` accepts: ``want`` rows first (usually all it takes), then
    :data:`SCAN` at a time by keyset while ``keep`` drops some."""
    out: list[dict[str, Any]] = []
    last: tuple[Any, Any] | None = None
    while len(out) < want:
        after = " AND (c.created_at > {} OR (c.created_at = {} AND c.id > {}))" if last else ""
        more = [last[0], last[0], last[1]] if last else []
        size = SCAN if last else want
        batch = await BackupConfig.raw(
            f"{sql}{after} ORDER BY c.created_at, c.id LIMIT {{}}", *args, *more, size
        )
        out += [r for r in batch if keep(r)]
        if len(batch) < size:
            break
        last = (batch[-1]["created_at"], batch[-1]["id"])
    return out[:want]


class OverviewService:
    def __init__(self, agents: AgentService) -> None:
        self.agents = agents

    async def overview(
        self, user: CurrentUser, now: datetime, *, rows: int, agent_rows: int
    ) -> FleetOverview:
        """Counts over every config and agent of ``user``; the worst ``rows`` configs and the
        ``agent_rows`` agents to show. A constant number of statements reading O(shown) rows
        (and the silent one-shot agents, see the module's docstring)."""
        silent_since = now - timedelta(seconds=self.agents.settings.offline_after_seconds)
        cutoff = now - OVERDUE_AFTER

        # Counts per stored severity, and how many of each still have a verified backup younger
        # than a day: from the ``("user", severity, created_at, id, last_ok_at)`` index alone.
        per: dict[int, tuple[int, int]] = {
            int(r["severity"]): (int(r["n"]), int(r["ok"] or 0))
            for r in await BackupConfig.raw(
                "SELECT severity, COUNT(*) AS n,"
                " SUM(CASE WHEN last_ok_at >= {} THEN 1 ELSE 0 END) AS ok"
                ' FROM backapp_backup_config WHERE "user" = {} GROUP BY severity',
                cutoff,
                user.id,
            )
        }
        total = sum(n for n, _ in per.values())
        fine = [per.get(s, (0, 0)) for s in (RUNNING, FINE)]
        # Running or fine when last written, but their verified backup aged past a day since.
        aged = sum(n - ok for n, ok in fine)
        bad = sum(per.get(s, (0, 0))[0] for s in range(STALE + 1)) + aged
        healthy = sum(ok for s, (_, ok) in per.items() if s != 0)

        # The silent one-shot agents, each classified by its schedules (idle or offline); every
        # other silent agent is offline.
        cron = await self.agents.briefs(user, silent_since=silent_since, oneshot=True)
        cron_offline = {uuid.UUID(a.id) for a in cron if a.status == "offline"}
        # Configs of silent agents that would otherwise be fine: one count for the agents that
        # are surely offline, one per silent one-shot agent.
        offline = 0
        for r in await BackupConfig.raw(
            f"SELECT {_ONESHOT} AS cron, CASE WHEN {_ONESHOT} = 1 THEN c.agent END AS agent,"
            " SUM(CASE WHEN c.last_ok_at >= {} THEN 1 ELSE 0 END) AS n"
            # From the silent agents (their index) to their configs, not the other way round.
            " FROM backapp_agent a JOIN backapp_backup_config c ON c.agent = a.id"
            f' WHERE a."user" = {{}} AND {_SILENT} AND c.severity >= {RUNNING}'
            " GROUP BY 1, 2",
            cutoff,
            user.id,
            True,
            silent_since,
        ):
            if not r["cron"] or uuid.UUID(str(r["agent"])) in cron_offline:
                offline += int(r["n"] or 0)

        def is_offline(r: dict[str, Any]) -> bool:
            return not r["cron"] or uuid.UUID(str(r["agent"])) in cron_offline

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
            crossed = await _keyset(
                'SELECT c.id, c.created_at FROM backapp_backup_config c WHERE c."user" = {}'
                f" AND c.severity IN ({RUNNING}, {FINE}) AND c.last_ok_at < {{}}",
                [user.id, cutoff],
                rows,
                lambda _: True,
            )
            if crossed:
                order = await self._created(stale)
                merged = sorted(
                    [(order[i], i) for i, _ in stale]
                    + [((r["created_at"], str(r["id"])), str(r["id"])) for r in crossed],
                    key=lambda item: (str(item[0][0]), item[0][1]),
                )
                shown = [(i, s) for i, s in shown if s != STALE]
                shown += [(i, STALE) for _, i in merged][: rows - len(shown)]
        if offline and len(shown) < rows:
            # Then the configs of offline agents (3), in list order.
            found = await _keyset(
                f"SELECT c.id, c.created_at, c.agent, {_ONESHOT} AS cron"
                " FROM backapp_backup_config c JOIN backapp_agent a ON a.id = c.agent"
                f' WHERE c."user" = {{}} AND {_SILENT} AND c.severity >= {RUNNING}'
                " AND c.last_ok_at >= {}",
                [user.id, True, silent_since, cutoff],
                rows - len(shown),
                is_offline,
            )
            shown += [(str(r["id"]), OFFLINE) for r in found]
        for severity in (RUNNING, FINE):
            if len(shown) >= rows:
                break
            # Then running, then fine, leaving out those of offline agents (already shown).
            found = await _keyset(
                f"SELECT c.id, c.created_at, c.agent, {_ONESHOT} AS cron,"
                f" CASE WHEN {_SILENT} THEN 1 ELSE 0 END AS silent"
                " FROM backapp_backup_config c LEFT JOIN backapp_agent a ON a.id = c.agent"
                ' WHERE c."user" = {} AND c.severity = {} AND c.last_ok_at >= {}',
                [True, silent_since, user.id, severity, cutoff],
                rows - len(shown),
                lambda r: not (r["silent"] and is_offline(r)),
            )
            shown += [(str(r["id"]), severity) for r in found]

        agent_total = await self.agents.count(user)
        silent_total = await self.agents.count_silent(user, silent_since)
        # Agents that need attention first: the surely offline ones (a page of them), and the
        # silent one-shot agents by their status, in list order within a status.
        sure = await self.agents.briefs(
            user, silent_since=silent_since, oneshot=False, limit=agent_rows
        )
        candidates = sure + cron
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
