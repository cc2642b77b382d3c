from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import UUID
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T07:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "Repository.prefix_agent: a continued repository keeps its objects under the old agent"
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="repos", description=DESCRIPTION)

    manager.add_column(
        table_class_name="Repository",
        tablename="backapp_repository",
        column_name="prefix_agent",
        db_column_name="prefix_agent",
        column_class_name="UUID",
        column_class=UUID,
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
