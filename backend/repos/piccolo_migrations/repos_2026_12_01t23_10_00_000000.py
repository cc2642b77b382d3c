from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-01T23:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "One object per (repository, kind, name); packs found by sequence number"


class _RepoObject(Table, tablename="backapp_repo_object"):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="repos", description=DESCRIPTION)

    async def indexes() -> None:
        # The agent's batch requests and concurrent snapshots of one machine rely on the unique
        # name; Piccolo declares no composite constraint, so it is made here.
        await _RepoObject.raw(
            "CREATE UNIQUE INDEX IF NOT EXISTS backapp_repo_object_name "
            "ON backapp_repo_object (repository, kind, name)"
        )
        await _RepoObject.raw(
            "CREATE INDEX IF NOT EXISTS backapp_repo_object_seq "
            "ON backapp_repo_object (repository, seq)"
        )

    async def drop() -> None:
        await _RepoObject.raw("DROP INDEX IF EXISTS backapp_repo_object_seq")
        await _RepoObject.raw("DROP INDEX IF EXISTS backapp_repo_object_name")

    manager.add_raw(indexes)
    manager.add_raw_backwards(drop)
    return manager
