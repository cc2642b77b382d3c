from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T10:40:20:000000"
VERSION = "1.38.0"
DESCRIPTION = "One agent release per (platform, version)"


class _AgentRelease(Table, tablename="backapp_agent_release"):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    async def unique_release() -> None:
        # ``agent-release add`` claims the pair with its insert: a second, concurrent add of the
        # same build fails there. Piccolo declares no composite constraint, so it is made here.
        await _AgentRelease.raw(
            "CREATE UNIQUE INDEX IF NOT EXISTS backapp_agent_release_pair "
            "ON backapp_agent_release (platform, version)"
        )

    async def drop_pair() -> None:
        await _AgentRelease.raw("DROP INDEX IF EXISTS backapp_agent_release_pair")

    manager.add_raw(unique_release)
    manager.add_raw_backwards(drop_pair)
    return manager
