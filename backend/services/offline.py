"""Which agents are offline, stored on the agent (``offline_since``) so that the dashboard ranks
their configs from the config rows alone (severity 3, ``services/last_backup.py``).

* :func:`mark_offline` runs in the presence round: ``UPDATE … RETURNING`` statements mark the
  agents the database has not heard from for ``offline_after`` (or never), :data:`MARK_BATCH` a
  statement over the ``(offline_since, last_seen)`` index, so they read only agents that are not
  marked yet, and the severity of their configs is recomputed; a round stops when its budget is
  used and the next rounds go on. A one-shot agent that was heard from is silent
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig
from backend.services.alerts import oneshot_expected_by
from backend.services.clock import aware
from backend.services.last_backup import BATCH, refresh_severity
from backend.services.presence import ONESHOT
from backend.services.round_budget import RoundBudget
from backend.settings import Settings

__all__ = ["MARK_BATCH", "ROUND_AGENTS", "Marked", "clear_offline", "mark_offline"]

MARK_BATCH = 500
"""Agents one statement of the presence round marks offline (their configs ranked with them)."""
ROUND_AGENTS = 5000
"""Agents one presence round marks at the most (as many configs as a retention round reads)."""

_ONESHOT_SEEN = "COALESCE(mode, '') = {} AND last_seen IS NOT NULL"


@dataclass
class Marked:
    """What one presence round marked offline, and whether agents are left for the next."""

    agents: list[uuid.UUID]
    more: bool


async def mark_offline(
    now: datetime, settings: Settings, budget: RoundBudget | None = None
) -> Marked:
    """Mark the agents that are offline at ``now`` and not marked yet, and rank their configs
    offline, :data:`MARK_BATCH` agents a statement until ``budget`` (default: the round budget
    of ``settings``) is spent; what is left is marked by the next rounds (``more``)."""
    if budget is None:
        budget = RoundBudget(settings.round_budget_seconds, ROUND_AGENTS)
    silent_since = now - timedelta(seconds=settings.offline_after_seconds)
    silent = "offline_since IS NULL AND active = {} AND (last_seen IS NULL OR last_seen < {})"
    marked: list[uuid.UUID] = []
    while True:
        limit = min(MARK_BATCH, max(1, budget.left))
        # After an upgrade or an outage thousands of agents are due at once: a batch at a time,
        # each with its configs ranked, so a round holds its lock about as long as its budget.
        batch = [
            uuid.UUID(str(r["id"]))
            for r in await Agent.raw(
                "UPDATE backapp_agent SET offline_since = {} WHERE id IN (SELECT id FROM"
                f" backapp_agent WHERE {silent} AND NOT ({_ONESHOT_SEEN})"
                f" LIMIT {limit}) RETURNING id",
                now,
                True,
                silent_since,
                ONESHOT,
            )
        ]
        await _rank_configs(batch)
        marked += batch
        budget.take(len(batch))
        if len(batch) < limit:
            break
        if budget.spent:
            return Marked(marked, more=True)
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
        late = await _update_agents(
            overdue, "offline_since = {}", silent, (now,), (True, silent_since)
        )
        await _rank_configs(late)
        marked += late
    return Marked(marked, more=False)


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
