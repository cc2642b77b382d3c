"""Back-fill each config's newest-backup columns from its history (the statement the services
use to keep them).

A separate migration from the one that adds the columns: Piccolo runs a migration's raw steps
before its column changes."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T04:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "back-fill each config's newest backup"

# Written out rather than imported: a migration must keep doing what it did when it was written.
_NEWEST = (
    "(SELECT b.{column} FROM backapp_backup_log b WHERE b.config = backapp_backup_config.id{only}"
    " ORDER BY b.started_at DESC, b.id DESC LIMIT 1)"
)
BACKFILL = (
    "UPDATE backapp_backup_config SET"
    f" last_backup_id = {_NEWEST.format(column='id', only='')},"
    f" last_status = {_NEWEST.format(column='status', only='')},"
    " last_ok_at = "
    + _NEWEST.format(column="completed_at", only=" AND b.status = 'completed'").replace(
        "b.completed_at", "COALESCE(b.completed_at, b.started_at)", 1
    )
    + ", alert_due_at = NULL, retention_due_at = NULL, revision = revision + 1"
)


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def backfill() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(BACKFILL)

    manager.add_raw(backfill)
    return manager
