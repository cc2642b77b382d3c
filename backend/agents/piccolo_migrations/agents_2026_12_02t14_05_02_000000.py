"""``(offline_since, last_seen)`` on agents: the presence round finds the agents that fell silent
and are not yet marked offline (``offline_since IS NULL AND last_seen < …``) by one range of it,
whatever the number of agents already marked."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T14:05:02:000000"
VERSION = "1.38.0"
DESCRIPTION = "index agents by (offline_since, last_seen)"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    async def up() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "CREATE INDEX IF NOT EXISTS backapp_agent_offline_seen"
            " ON backapp_agent (offline_since, last_seen)"
        )

    async def down() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DROP INDEX IF EXISTS backapp_agent_offline_seen")

    manager.add_raw(up)
    manager.add_raw_backwards(down)
    return manager
