"""Which agents are offline, stored on the agent (``offline_since``) so that the dashboard ranks
their configs from the config rows alone (severity 3, ``services/last_backup.py``).

* :func:`mark_offline` runs in the presence round: one ``UPDATE … RETURNING`` marks the agents
  the database has not heard from for ``offline_after`` (or never), over the ``(offline_since,
  last_seen)`` index, so it reads only agents that are not marked yet; then the severity of the
  configs of the agents it marked is recomputed. A one-shot agent that was heard from is silent
  by design between its runs (``services/presence.py``): it is marked only once its next
  scheduled run (plus grace) has passed, which takes its schedules, so those are read for the
  silent one-shot agents not marked yet.
* :func:`clear_offline` runs on the heartbeat flush, for the agents this process had not heard
  from for ``offline_after`` (the only ones that can be marked): one statement per flush that has
  such agents, none while every agent beats steadily.

Between a round and the next, an agent that just fell silent is not yet marked: the dashboard
lags the agent pages by at most one round there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig
from backend.services.alerts import oneshot_expected_by
from backend.services.clock import aware
from backend.services.last_backup import BATCH, refresh_severity
from backend.services.presence import ONESHOT
from backend.settings import Settings

__all__ = ["clear_offline", "mark_offline"]

_ONESHOT_SEEN = "COALESCE(mode, '') = {} AND last_seen IS NOT NULL"


async def mark_offline(now: datetime, settings: Settings) -> list[uuid.UUID]:
    """Mark the agents that are offline at ``now`` and not marked yet, and rank their configs
    offline; returns the agents marked."""
    silent_since = now - timedelta(seconds=settings.offline_after_seconds)
    silent = "offline_since IS NULL AND active = {} AND (last_seen IS NULL OR last_seen < {})"
    marked = [
        uuid.UUID(str(r["id"]))
        for r in await Agent.raw(
            f"UPDATE backapp_agent SET offline_since = {{}} WHERE {silent}"
            f" AND NOT ({_ONESHOT_SEEN}) RETURNING id",
            now,
            True,
            silent_since,
            ONESHOT,
        )
    ]
    # One-shot agents: offline once their next run is overdue.
    cron = await Agent.raw(
        f"SELECT id, last_seen, timezone FROM backapp_agent WHERE {silent} AND {_ONESHOT_SEEN}",
        True,
        silent_since,
        ONESHOT,
    )
    if cron:
        configs: dict[Any, list[dict[str, Any]]] = {r["id"]: [] for r in cron}
        for start in range(0, len(cron), BATCH):
            chunk = [r["id"] for r in cron[start : start + BATCH]]
            for c in await BackupConfig.select(BackupConfig.agent, BackupConfig.options).where(
                BackupConfig.agent.is_in(chunk)
            ):
                configs[c["agent"]].append(c)
        overdue = [
            r["id"]
            for r in cron
            if oneshot_expected_by(
                aware(r["last_seen"]) or r["last_seen"],
                r["timezone"],
                configs[r["id"]],
                settings,
            )
            < now
        ]
        marked += await _update_agents(
            overdue, "offline_since = {}", silent, (now,), (True, silent_since)
        )
    await _rank_configs(marked)
    return marked


async def clear_offline(agent_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Unmark the agents among ``agent_ids`` that were marked offline (they beat again) and
    rank their configs by their own state again; returns those unmarked."""
    ids = sorted(set(agent_ids), key=lambda u: u.int)
    cleared = await _update_agents(ids, "offline_since = NULL", "offline_since IS NOT NULL")
    await _rank_configs(cleared)
    return cleared


async def _update_agents(
    ids: list[Any],
    assign: str,
    condition: str,
    assign_args: tuple[Any, ...] = (),
    condition_args: tuple[Any, ...] = (),
) -> list[uuid.UUID]:
    """``UPDATE backapp_agent SET assign`` for the agents among ``ids`` that meet ``condition``,
    ``BATCH`` ids a statement; returns the ids updated."""
    updated: list[uuid.UUID] = []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        marks = ", ".join("{}" for _ in chunk)
        rows = await Agent.raw(
            f"UPDATE backapp_agent SET {assign} WHERE id IN ({marks}) AND {condition} RETURNING id",
            *assign_args,
            *chunk,
            *condition_args,
        )
        updated += [uuid.UUID(str(r["id"])) for r in rows]
    return updated


async def _rank_configs(agent_ids: list[uuid.UUID]) -> None:
    """Recompute the stored severity of the configs of ``agent_ids``."""
    for start in range(0, len(agent_ids), BATCH):
        chunk = agent_ids[start : start + BATCH]
        marks = ", ".join("{}" for _ in chunk)
        await refresh_severity(f"agent IN ({marks})", *chunk)
