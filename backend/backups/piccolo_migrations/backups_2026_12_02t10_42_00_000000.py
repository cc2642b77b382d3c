"""Each config's dashboard severity on its row, with the indexes that read the dashboard by page.

* ``("user", severity, created_at, id, last_ok_at)``: the dashboard's worst configs in list order
  and its counts per severity, from the index alone (``services/overview.py``);
* ``(severity, last_ok_at)``: the alert round's move of configs whose verified backup just aged
  past a day (``services/last_backup.sweep_severity``);
* ``("user", active, last_seen)`` on agents: the agents the database has not heard from lately
  (deactivated, never heard from, or silent since: three ranges of it), and their configs.

The column is added here and back-filled by the next migration (Piccolo runs a migration's raw
steps before its column changes).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T10:42:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "each config's dashboard severity on its row"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)
    manager.add_column(
        table_class_name="BackupConfig",
        tablename="backapp_backup_config",
        column_name="severity",
        db_column_name="severity",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 2,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )
    return manager
