"""An index for housekeeping's look for multipart uploads that finished runs left open: without
it the look reads every finished backup (the status index), O(backups) every round."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T14:40:17:000000"
VERSION = "1.38.0"
DESCRIPTION = "index backup logs by upload state and status"

INDEX = "backapp_backup_log_upload_state"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def create() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON backapp_backup_log (upload_state, status)"
        )

    async def drop() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(f"DROP INDEX IF EXISTS {INDEX}")

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
