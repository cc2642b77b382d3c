"""Indexes of the bounded periodic rounds (issue 17):

* housekeeping's look for multipart uploads that finished runs left open: without it the look
  reads every finished backup (the status index), O(backups) every round;
* the retention and alert rounds read the configs due by keyset, ``(due, id)``: the unset ones in
  id order, then by due time (``services/round_budget.py``), each a range of one index."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T14:40:17:000000"
VERSION = "1.38.0"
DESCRIPTION = "indexes of the bounded rounds: upload state, due times with the id"

INDEXES = [
    ("backapp_backup_log_upload_state", "backapp_backup_log", "upload_state, status"),
    ("backapp_backup_config_alert_due_id", "backapp_backup_config", "alert_due_at, id"),
    ("backapp_backup_config_retention_due_id", "backapp_backup_config", "retention_due_at, id"),
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
