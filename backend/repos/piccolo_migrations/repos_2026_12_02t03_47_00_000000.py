from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T03:47:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "One check and one drill row per configuration"


class _ConfigCheck(Table, tablename="backapp_config_check"):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="repos", description=DESCRIPTION)

    async def indexes() -> None:
        # Reports replace the row of their (config, kind); Piccolo declares no composite
        # constraint, so it is made here.
        await _ConfigCheck.raw(
            "CREATE UNIQUE INDEX IF NOT EXISTS backapp_config_check_kind "
            "ON backapp_config_check (config, kind)"
        )

    async def drop() -> None:
        await _ConfigCheck.raw("DROP INDEX IF EXISTS backapp_config_check_kind")

    manager.add_raw(indexes)
    manager.add_raw_backwards(drop)
    return manager
