"""Back-fill each config's dashboard severity and create the indexes that read it (see the
previous migration)."""

from datetime import UTC, datetime, timedelta

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder
from piccolo.querystring import QueryString

ID = "2026-12-02T10:42:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "back-fill each config's dashboard severity; its indexes"

INDEXES = [
    (
        "backapp_backup_config_user_severity",
        "backapp_backup_config",
        '"user", severity, created_at, id, last_ok_at',
    ),
    ("backapp_backup_config_severity_ok", "backapp_backup_config", "severity, last_ok_at"),
    ("backapp_agent_user_active_seen", "backapp_agent", '"user", active, last_seen'),
]

# Written out rather than imported: a migration must keep doing what it did when it was written.
BACKFILL = (
    "UPDATE backapp_backup_config SET severity = CASE"
    " WHEN last_status = 'failed' THEN 0"
    " WHEN execution_mode = 'agent' AND (agent IS NULL OR NOT EXISTS (SELECT 1 FROM backapp_agent"
    " a WHERE a.id = backapp_backup_config.agent AND a.active = {})) THEN 1"
    " WHEN last_ok_at IS NULL OR last_ok_at < {} THEN 2"
    " WHEN last_status = 'running' THEN 4"
    " ELSE 5 END"
)


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def backfill() -> None:
        engine = engine_finder()
        assert engine is not None
        cutoff = datetime.now(UTC) - timedelta(hours=24)
        await engine.run_querystring(QueryString(BACKFILL, True, cutoff))
        for name, table, columns in INDEXES:
            await engine.run_ddl(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")

    async def drop() -> None:
        engine = engine_finder()
        assert engine is not None
        for name, _, _ in INDEXES:
            await engine.run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(backfill)
    manager.add_raw_backwards(drop)
    return manager
