"""Seed a fleet (agents, configs, backups) for one user straight into the tables, in bulk.

Going through the API would take minutes for hundreds of configs; these are the same rows the
services write, inserted with multi-row INSERTs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, BackupLog
from backend.services.last_backup import refresh_last_backups

__all__ = ["Fleet", "seed_fleet"]

DAILY = {"preset": "daily", "at": "02:00", "cron": "0 2 * * *"}


@dataclass
class Fleet:
    agent_ids: list[uuid.UUID] = field(default_factory=list)
    config_ids: list[uuid.UUID] = field(default_factory=list)
    backup_ids: list[uuid.UUID] = field(default_factory=list)


async def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 200):
        await table.insert(*[table(**row) for row in rows[start : start + 200]])


async def seed_fleet(
    user_id: uuid.UUID,
    *,
    now: datetime,
    agents: int = 1,
    configs: int = 10,
    backups_per_config: int = 3,
    retention_days: int = 0,
    schedule: dict[str, Any] | None = None,
    first: int = 0,
    fleet: Fleet | None = None,
) -> Fleet:
    """``configs`` configs (named ``config-{first+i:05d}``) spread over ``agents`` new agents, each
    with ``backups_per_config`` completed backups, the newest ``now - 1 h``, one a day before it."""
    fleet = fleet or Fleet()
    agent_rows = [
        dict(
            id=uuid.uuid4(),
            user=user_id,
            name=f"machine-{first + i:05d}",
            api_key_digest=uuid.uuid4().hex + uuid.uuid4().hex,
            api_key_prefix="bk_test",
            active=True,
            platform="linux",
            last_seen=now,
            created_at=now - timedelta(days=30, seconds=-(first + i)),
            updated_at=now,
        )
        for i in range(agents)
    ]
    await _insert(Agent, agent_rows)
    fleet.agent_ids += [r["id"] for r in agent_rows]
    options = {"retentionDays": retention_days, "schedule": schedule}
    config_rows = [
        dict(
            id=uuid.uuid4(),
            user=user_id,
            name=f"config-{first + i:05d}",
            execution_mode="agent",
            agent=agent_rows[i % agents]["id"],
            sources=[{"path": f"/data/{first + i}"}],
            excludes=[],
            options=options,
            created_at=now - timedelta(days=30, seconds=-(first + i)),
            updated_at=now,
        )
        for i in range(configs)
    ]
    await _insert(BackupConfig, config_rows)
    fleet.config_ids += [r["id"] for r in config_rows]
    backups = []
    for config in config_rows:
        for day in range(backups_per_config):
            started = now - timedelta(hours=1, days=day)
            backups.append(
                dict(
                    id=uuid.uuid4(),
                    user=user_id,
                    config=config["id"],
                    agent=config["agent"],
                    config_name=config["name"],
                    status="completed",
                    s3_path=f"users/{user_id}/configs/{config['id']}/{uuid.uuid4().hex}.tar.gz",
                    filename="backup.tar.gz",
                    size=1000,
                    sha256="0" * 64,
                    errors=[],
                    started_at=started,
                    completed_at=started + timedelta(minutes=5),
                )
            )
    await _insert(BackupLog, backups)
    # The services keep each config's newest backup on its row; rows inserted here bypass them.
    await refresh_last_backups(r["id"] for r in config_rows)
    fleet.backup_ids += [r["id"] for r in backups]
    return fleet
