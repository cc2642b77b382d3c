from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import UUID, Integer, Timestamptz, Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "each config's newest backup on the config row"


def _params(**extra: object) -> dict[str, object]:
    return {
        "default": None,
        "null": True,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **extra,
    }


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)
    for name, cls, extra in (
        ("last_backup_id", UUID, {}),
        ("last_status", Varchar, {"length": 16}),
        ("last_ok_at", Timestamptz, {}),
        ("alert_due_at", Timestamptz, {"index": True}),
        ("retention_due_at", Timestamptz, {"index": True}),
        ("revision", Integer, {"default": 0, "null": False}),
    ):
        manager.add_column(
            table_class_name="BackupConfig",
            tablename="backapp_backup_config",
            column_name=name,
            db_column_name=name,
            column_class_name=cls.__name__,
            column_class=cls,
            params=_params(**extra),
            schema=None,
        )
    return manager
