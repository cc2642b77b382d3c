"""The dashboard's figures for one owner, in O(page + problems) rows, whatever the fleet.

Each config's health (the rules of ``backend/web/_health.py``: failing, a blocking problem, no or
an old verified backup, an offline agent, running, fine) is ranked by a *severity*, worst first.
Every part of it but "its agent is offline" is a SQL expression over the config row (its newest
backup is kept on it, see ``backend/services/last_backup.py``) and its agent's ``active``; the
database counts the configs by it and hands over only the worst ones. Whether an agent is offline
depends on what this process heard and, for a one-shot agent, on its schedules: that is worked out
in Python for the agents the database has not seen for ``offline_after`` (a superset of those that
are offline, and few in a healthy fleet), and their configs are read apart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.backups.tables import BackupConfig
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentBrief, AgentService

__all__ = ["ATTENTION", "FleetOverview", "OverviewService"]

OVERDUE_AFTER = timedelta(hours=24)
"""As ``backend/web/_health.py``: no verified backup for this long is overdue."""
ATTENTION = 4
"""Severities below this need attention (3 is "its agent is offline")."""
AGENT_RANK = {"offline": 0, "error": 1, "idle": 2, "online": 3}
SCAN = 500
"""Configs of silent agents read per statement while filling the page."""

# ``{cutoff}`` is filled with a placeholder; ``{active}`` compares with a bound boolean.
_BASE = """
SELECT c.id AS id, c.agent AS agent, c.created_at AS created_at,
  CASE WHEN c.execution_mode = 'agent' AND a.active = {{}}
    AND (a.last_seen IS NULL OR a.last_seen < {{}}) THEN 1 ELSE 0 END AS silent,
  CASE WHEN COALESCE(c.last_status, '') <> 'failed' AND c.last_ok_at >= {{}} THEN 1 ELSE 0 END
    AS safe,
  CASE
    WHEN c.last_status = 'failed' THEN 0
    WHEN c.execution_mode = 'agent' AND (c.agent IS NULL OR a.active = {{}}) THEN 1
    WHEN c.last_ok_at IS NULL OR c.last_ok_at < {{}} THEN 2
    WHEN c.last_status = 'running' THEN 4
    ELSE 5
  END AS severity
FROM backapp_backup_config c LEFT JOIN backapp_agent a ON a.id = c.agent
WHERE c."user" = {{}}
"""


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
        ``agent_rows`` agents to show. A constant number of statements, O(shown + silent agents)
        rows read."""
        silent_since = now - timedelta(seconds=self.agents.settings.offline_after_seconds)
        cutoff = now - OVERDUE_AFTER
        silent = await self.agents.briefs(user, silent_since=silent_since)
        offline = {uuid.UUID(a.id) for a in silent if a.active and a.status == "offline"}
        base = _BASE.format()
        args = [True, silent_since, cutoff, False, cutoff, user.id]

        [counts] = await BackupConfig.raw(
            "SELECT COUNT(*) AS total,"
            " SUM(safe) AS healthy,"
            " SUM(CASE WHEN severity < 3 THEN 1 ELSE 0 END) AS bad"
            f" FROM ({base}) s",
            *args,
        )
        # Configs of silent agents that would otherwise be fine: offline (3) or not, by agent.
        per_agent = await BackupConfig.raw(
            f"SELECT agent, COUNT(*) AS n FROM ({base}) s WHERE silent = 1 AND severity >= {ATTENTION}"
            " GROUP BY agent",
            *args,
        )
        attention = int(counts["bad"] or 0) + sum(
            int(r["n"]) for r in per_agent if uuid.UUID(str(r["agent"])) in offline
        )
        shown: list[tuple[str, int]] = [
            (str(r["id"]), int(r["severity"]))
            for r in await BackupConfig.raw(
                f"SELECT id, severity FROM ({base}) s WHERE severity < 3"
                " ORDER BY severity, created_at, id LIMIT {}",
                *args,
                rows,
            )
        ]
        # Then the configs of offline agents (3), then the rest (4, 5) in list order.
        later: list[tuple[int, Any, str]] = []
        offset = 0
        while len(shown) < rows and any(r["n"] for r in per_agent):
            batch = await BackupConfig.raw(
                f"SELECT id, agent, severity, created_at FROM ({base}) s"
                f" WHERE silent = 1 AND severity >= {ATTENTION}"
                " ORDER BY created_at, id LIMIT {} OFFSET {}",
                *args,
                SCAN,
                offset,
            )
            for r in batch:
                if uuid.UUID(str(r["agent"])) in offline:
                    if len(shown) < rows:
                        shown.append((str(r["id"]), 3))
                else:
                    later.append((int(r["severity"]), r["created_at"], str(r["id"])))
            if len(batch) < SCAN:
                break
            offset += SCAN
        if len(shown) < rows:
            rest = await BackupConfig.raw(
                f"SELECT id, severity, created_at FROM ({base}) s"
                f" WHERE severity >= {ATTENTION} AND silent = 0"
                " ORDER BY severity, created_at, id LIMIT {}",
                *args,
                rows - len(shown),
            )
            later += [(int(r["severity"]), r["created_at"], str(r["id"])) for r in rest]
            later.sort(key=lambda item: (item[0], str(item[1]), item[2]))
            shown += [(config_id, sev) for sev, _, config_id in later[: rows - len(shown)]]

        agent_total = await self.agents.count(user)
        not_online = [a for a in silent if a.status != "online"]
        listed = sorted(not_online, key=lambda a: AGENT_RANK.get(a.status, 3))[:agent_rows]
        if len(listed) < agent_rows:
            fresh = await self.agents.online_briefs(user, silent_since, agent_rows)
            back = [a for a in silent if a.status == "online"]  # heard by this process
            listed += (fresh + back)[: agent_rows - len(listed)]
        return FleetOverview(
            config_total=int(counts["total"] or 0),
            healthy=int(counts["healthy"] or 0),
            attention=attention,
            shown=shown,
            agent_total=agent_total,
            agents_online=agent_total - len(not_online),
            agents=listed,
        )
