from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T03:46:35:000000"
VERSION = "1.38.0"
DESCRIPTION = "One inheritance mark per (new agent, old agent)"


class _AgentInheritance(Table, tablename="backapp_agent_inheritance"):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="agents", description=DESCRIPTION)

    async def unique_pair() -> None:
        # A repeated mark is idempotent (insert ... on conflict do nothing); Piccolo declares no
        # composite constraint, so it is made here.
        await _AgentInheritance.raw(
            "CREATE UNIQUE INDEX IF NOT EXISTS backapp_agent_inheritance_pair "
            "ON backapp_agent_inheritance (agent, from_agent)"
        )

    async def drop_pair() -> None:
        await _AgentInheritance.raw("DROP INDEX IF EXISTS backapp_agent_inheritance_pair")

    manager.add_raw(unique_pair)
    manager.add_raw_backwards(drop_pair)
    return manager
