"""``("user", mode, last_seen)`` on agents: the dashboard's page of silent one-shot agents (idle
or offline by their schedules) is a range of it, instead of a walk over every silent agent of the
owner to find the few (or none) that run from cron: 26-30 ms for no rows at 10,000 agents on
SQLite, and 10 ms on PostgreSQL."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T18:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index agents by (user, mode, last_seen)"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    async def up() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "CREATE INDEX IF NOT EXISTS backapp_agent_user_mode_seen"
            ' ON backapp_agent ("user", mode, last_seen)'
        )

    async def down() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DROP INDEX IF EXISTS backapp_agent_user_mode_seen")

    manager.add_raw(up)
    manager.add_raw_backwards(down)
    return manager
