from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import BigInt, Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T07:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "KeyRevocations: a count of revoked agent keys, so other processes drop their cache"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    manager.add_table(
        class_name="KeyRevocations",
        tablename="backapp_key_revocations",
        schema=None,
        columns=None,
    )

    manager.add_column(
        table_class_name="KeyRevocations",
        tablename="backapp_key_revocations",
        column_name="id",
        db_column_name="id",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 0,
            "null": False,
            "primary_key": True,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="KeyRevocations",
        tablename="backapp_key_revocations",
        column_name="revoked",
        db_column_name="revoked",
        column_class_name="BigInt",
        column_class=BigInt,
        params={
            "default": 0,
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
