"""Each agent's configs as a list of agents shows them: their ids, and for one-shot agents their
options (when such an agent is due back depends on its schedules)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from backend.backups.tables import BackupConfig
from backend.services.presence import ONESHOT

__all__ = ["configs_of_agents"]


async def configs_of_agents(agents: list[dict[str, Any]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Each agent's configs: their ``id``, and their ``options`` for one-shot agents only
    (when such an agent is due back depends on its schedules; the options of every config of
    a page of agents are not decoded for nothing). A query for each kind the page has; the
    others' ids come one text list per agent, so a 500-agent page makes 500 rows, not one
    per config."""
    result: dict[uuid.UUID, list[dict[str, Any]]] = {a["id"]: [] for a in agents}
    oneshot = [a["id"] for a in agents if a["mode"] == ONESHOT]
    others = [a["id"] for a in agents if a["mode"] != ONESHOT]
    if others:
        for agent_id, config_ids in await _config_ids_by_agent(others):
            result[agent_id] = [{"id": c} for c in config_ids]
    if oneshot:
        columns = (BackupConfig.id, BackupConfig.agent, BackupConfig.options)
        for row in await BackupConfig.select(*columns).where(BackupConfig.agent.is_in(oneshot)):
            result[row["agent"]].append(row)
    return result


_CONFIG_IDS_SQL = {
    # One array parameter: no placeholder per agent, and the ids come back as text.
    "postgres": "SELECT agent, array_agg(id::text ORDER BY created_at, id) AS ids"
    " FROM backapp_backup_config WHERE agent = ANY({}::uuid[]) GROUP BY agent",
    # One JSON parameter; the ids inside an agent's group in creation order (its rowid order).
    "sqlite": "SELECT agent, group_concat(id) AS ids FROM ("
    "SELECT agent, id FROM backapp_backup_config"
    " WHERE agent IN (SELECT value FROM json_each({})) ORDER BY agent, created_at, id"
    ") GROUP BY agent",
}


async def _config_ids_by_agent(
    agent_ids: list[uuid.UUID],
) -> list[tuple[uuid.UUID, list[str]]]:
    """The ids (text) of the configs of each of ``agent_ids`` that has any, oldest first."""
    if getattr(BackupConfig._meta.db, "engine_type", "") == "postgres":
        rows = await BackupConfig.raw(_CONFIG_IDS_SQL["postgres"], agent_ids)
        return [(r["agent"], list(r["ids"])) for r in rows]
    rows = await BackupConfig.raw(
        _CONFIG_IDS_SQL["sqlite"], json.dumps([str(a) for a in agent_ids])
    )
    return [(_as_uuid(r["agent"]), r["ids"].split(",")) for r in rows]


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
