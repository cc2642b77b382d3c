from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-01T23:34:04:926751"
VERSION = "1.38.0"
DESCRIPTION = "Agent.mode: how the agent runs, as its heartbeat says (daemon, tray, oneshot)"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    manager.add_column(
        table_class_name="Agent",
        tablename="backapp_agent",
        column_name="mode",
        db_column_name="mode",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 16,
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
