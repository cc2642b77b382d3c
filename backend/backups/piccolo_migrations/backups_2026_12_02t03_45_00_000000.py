"""``catalog_at`` on backups: when the metadata object beside a completed backup was written
(issue 13, "a catalog that survives"); the catalog round writes those still missing."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T03:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "catalog_at: the metadata object beside each completed backup"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    manager.add_column(
        table_class_name="BackupLog",
        tablename="backapp_backup_log",
        column_name="catalog_at",
        db_column_name="catalog_at",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": True,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
