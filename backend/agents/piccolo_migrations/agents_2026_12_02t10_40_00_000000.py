from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T10:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "Agent.parallel_backups: how many configs the agent backs up at once, from the console"
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    manager.add_column(
        table_class_name="Agent",
        tablename="backapp_agent",
        column_name="parallel_backups",
        db_column_name="parallel_backups",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": None,
            "null": True,
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
