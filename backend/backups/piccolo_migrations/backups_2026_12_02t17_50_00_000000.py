"""An index for housekeeping's look for runs whose runner died (issue 17): the running backups in
start order, ``(status, started_at)``. Without it SQLite, once its statistics say the start-time
index orders the result, walks that index over every backup to find the few that run: 16 s a
round at a million backups."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T17:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of the running backups in start order"

NAME = "backapp_backup_log_status_started"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def create() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            f"CREATE INDEX IF NOT EXISTS {NAME} ON backapp_backup_log (status, started_at)"
        )

    async def drop() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(f"DROP INDEX IF EXISTS {NAME}")

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
