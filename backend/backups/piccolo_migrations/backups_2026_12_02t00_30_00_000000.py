"""Composite indexes that match the ORDER BY of the owner's lists and the periodic tasks (issue 17).

Piccolo declares single-column indexes only, so these are raw ``CREATE INDEX`` statements (the same
text on SQLite and PostgreSQL). Each one serves a query that must stay O(page) or O(changes):

* ``(config, started_at, id)``: the newest backup of each config (dashboard, /configs, alerts);
* ``(config, status, started_at)``: the newest completed backup of each config, and retention;
* ``("user", started_at, id)``: the backup history, newest first, keyset-paginated;
* ``(agent, started_at, id)``: one agent's backups;
* ``("user", status, started_at, id)``: the history filtered by status;
* ``("user", status, size)``: the totals per status, from the index alone;
* ``("user", created_at, id)`` on configs and agents: their lists, keyset-paginated;
* ``(agent, "timestamp")`` on agent logs: one agent's log, newest first.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T00:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "composite indexes for keyset pagination and per-config lookups"

INDEXES = [
    ("backapp_backup_log_config_started", "backapp_backup_log", "config, started_at, id"),
    ("backapp_backup_log_config_status", "backapp_backup_log", "config, status, started_at"),
    ("backapp_backup_log_user_started", "backapp_backup_log", '"user", started_at, id'),
    ("backapp_backup_log_agent_started", "backapp_backup_log", "agent, started_at, id"),
    # Covers the dashboard's totals (count and bytes per status) without reading the rows.
    ("backapp_backup_log_user_status_size", "backapp_backup_log", '"user", status, size'),
    (
        "backapp_backup_log_user_status_started",
        "backapp_backup_log",
        '"user", status, started_at, id',
    ),
    ("backapp_backup_config_user_created", "backapp_backup_config", '"user", created_at, id'),
    ("backapp_agent_user_created", "backapp_agent", '"user", created_at, id'),
    ("backapp_agent_log_agent_timestamp", "backapp_agent_log", 'agent, "timestamp", id'),
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def create() -> None:
        engine = engine_finder()
        assert engine is not None
        for name, table, columns in INDEXES:
            await engine.run_ddl(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")

    async def drop() -> None:
        engine = engine_finder()
        assert engine is not None
        for name, _, _ in INDEXES:
            await engine.run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
