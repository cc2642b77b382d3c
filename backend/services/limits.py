"""Bandwidth limits set from the web console: validated here, sent to agents in heartbeats.

The rules (what a limit set means, which limit holds when) live in
``desktop_agent.engine.bandwidth``, shared with the agents that apply them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig
from backend.errors import InvalidInput
from desktop_agent.engine.bandwidth import BandwidthLimits, LimitsError

__all__ = ["check_limits", "heartbeat_limits", "stored_limits"]


def check_limits(raw: Any, field: str) -> dict[str, Any] | None:
    """The normalised form of ``raw`` (``None`` when it limits nothing), or a 400 naming the
    field and why (a limit of 0 or less, a schedule that does not parse)."""
    try:
        limits = BandwidthLimits.parse(raw, field)
    except LimitsError as exc:
        raise InvalidInput(str(exc), field=field) from None
    return None if limits is None or limits.empty else limits.to_json()


def stored_limits(value: Any) -> dict[str, Any] | None:
    """A stored limits column or option as a dict (SQLite hands JSON back as text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


async def heartbeat_limits(
    agent_id: uuid.UUID,
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The agent's limits and its configs' own (``{configId: limits}``), for its heartbeat: two
    small indexed reads (the agent's row, its configs)."""
    row = await Agent.select(Agent.limits).where(Agent.id == agent_id).first()
    configs = await BackupConfig.select(BackupConfig.id, BackupConfig.options).where(
        BackupConfig.agent == agent_id
    )
    own: dict[str, dict[str, Any]] = {}
    for config in configs:
        options = stored_limits(config["options"]) or {}
        limits = stored_limits(options.get("limits"))
        if limits:
            own[str(config["id"])] = limits
    return (stored_limits(row["limits"]) if row else None), own
