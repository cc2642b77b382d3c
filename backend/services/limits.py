"""Bandwidth limits and ``parallelBackups`` set from the web console: validated here, sent to
agents in heartbeats.

The rules (what a limit set means, which limit holds when) live in
``desktop_agent.engine.bandwidth``, shared with the agents that apply them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from backend.agents.tables import Agent
from backend.errors import InvalidInput
from desktop_agent.engine import MAX_PARALLEL_BACKUPS
from desktop_agent.engine.bandwidth import BandwidthLimits, LimitsError

__all__ = [
    "HeartbeatLimits",
    "check_limits",
    "check_parallel_backups",
    "heartbeat_limits",
    "stored_limits",
]


def check_limits(raw: Any, field: str) -> dict[str, Any] | None:
    """The normalised form of ``raw`` (``None`` when it limits nothing), or a 400 naming the
    field and why (a limit of 0 or less, a schedule that does not parse)."""
    try:
        limits = BandwidthLimits.parse(raw, field)
    except LimitsError as exc:
        raise InvalidInput(str(exc), field=field) from None
    return None if limits is None or limits.empty else limits.to_json()


def check_parallel_backups(raw: Any, field: str = "parallelBackups") -> int | None:
    """How many configs the agent may back up at once (``None``: the machine's own setting), or a
    400 naming the field: a whole number from 1 to ``MAX_PARALLEL_BACKUPS`` (4), nothing else."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= MAX_PARALLEL_BACKUPS:
        return raw
    raise InvalidInput(
        f"{field}: must be a whole number from 1 to {MAX_PARALLEL_BACKUPS}, not {str(raw)[:20]!r}",
        field=field,
    )


def stored_limits(value: Any) -> dict[str, Any] | None:
    """A stored limits column or option as a dict (SQLite hands JSON back as text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


class HeartbeatLimits(NamedTuple):
    """What a heartbeat's answer tells the agent to run under."""

    limits: dict[str, Any] | None
    config_limits: dict[str, dict[str, Any]]
    """``{configId: limits}``: the configs with their own ``options.limits``."""
    parallel_backups: int | None


_HEARTBEAT_SQL = {
    # The agent's row, and only those of its configs whose options hold a limits object.
    "postgres": "SELECT a.limits, a.parallel_backups, c.id AS config_id,"
    " (CAST(c.options AS json) -> 'limits')::text AS config_limits FROM backapp_agent a"
    " LEFT JOIN backapp_backup_config c ON c.agent = a.id"
    " AND json_typeof(CAST(c.options AS json) -> 'limits') = 'object' WHERE a.id = {}",
    "sqlite": "SELECT a.limits, a.parallel_backups, c.id AS config_id,"
    " json_extract(c.options, '$.limits') AS config_limits FROM backapp_agent a"
    " LEFT JOIN backapp_backup_config c ON c.agent = a.id AND CASE WHEN json_valid(c.options)"
    " THEN json_type(c.options, '$.limits') END = 'object' WHERE a.id = {}",
}

Read = Callable[..., Awaitable[list[dict[str, Any]]]]
"""Runs SQL with ``{}`` placeholders: ``AgentRegistry.read``, the hot path's way to read."""


async def heartbeat_limits(agent_id: uuid.UUID, read: Read) -> HeartbeatLimits:
    """The agent's limits, its configs' own and its ``parallelBackups``, for its heartbeat: one
    indexed read through ``read``."""
    postgres = getattr(Agent._meta.db, "engine_type", "") == "postgres"
    rows = await read(_HEARTBEAT_SQL["postgres" if postgres else "sqlite"], agent_id)
    own: dict[str, dict[str, Any]] = {}
    for row in rows:
        limits = stored_limits(row["config_limits"])
        if row["config_id"] is not None and limits:
            own[str(row["config_id"])] = limits
    if not rows:
        return HeartbeatLimits(None, own, None)
    return HeartbeatLimits(stored_limits(rows[0]["limits"]), own, rows[0]["parallel_backups"])
