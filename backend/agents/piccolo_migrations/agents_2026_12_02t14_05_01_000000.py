"""When the presence round found an agent offline (``services/offline.py``); the next migration
indexes it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T14:05:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "Agent.offline_since: stored by the presence round, cleared by a heartbeat"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Agent",
        tablename="backapp_agent",
        column_name="offline_since",
        db_column_name="offline_since",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
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
