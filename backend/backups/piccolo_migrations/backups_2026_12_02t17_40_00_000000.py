"""How many configs each owner has at each dashboard severity, kept by the database itself, so
that the dashboard's counts read a handful of rows instead of every config (issue 17).

``backapp_config_severity_counts`` holds one row per (user, severity). Triggers on
``backapp_backup_config`` keep it in the transaction of every write that adds or removes a config,
or changes its severity or owner (create, delete, a backup's end, the presence and alert rounds,
a deleted user's cascade, a statement typed by hand), as ``backapp_backup_totals`` does for
backups (``backups_2026_12_02t14_05_00``): row triggers on SQLite; on PostgreSQL statement
triggers over transition tables for inserts and deletes and a row trigger with a ``WHEN`` for
updates (other writes to a config, such as the rounds' due times, do not call it).

The one part of the dashboard that moves with time alone (a verified backup turning a day old) is
not a count the database can keep: the dashboard counts, per severity, the configs *without* a
recent verified backup over the new ``("user", severity, last_ok_at)`` index (O(problems)), and
takes them from these counts.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T17:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "each owner's config counts per dashboard severity, kept by triggers"

_TABLE = (
    "CREATE TABLE IF NOT EXISTS backapp_config_severity_counts ("
    " id {serial} PRIMARY KEY,"
    ' "user" UUID NOT NULL REFERENCES backapp_user (id) ON DELETE CASCADE,'
    " severity INTEGER NOT NULL,"
    " n BIGINT NOT NULL DEFAULT 0)"
)
_UNIQUE = (
    "CREATE UNIQUE INDEX IF NOT EXISTS backapp_config_severity_counts_user_severity"
    ' ON backapp_config_severity_counts ("user", severity)'
)
_INDEX = (
    "CREATE INDEX IF NOT EXISTS backapp_backup_config_user_severity_last_ok"
    ' ON backapp_backup_config ("user", severity, last_ok_at)'
)
_BACKFILL = (
    'INSERT INTO backapp_config_severity_counts ("user", severity, n)'
    ' SELECT "user", severity, COUNT(*) FROM backapp_backup_config'
    ' WHERE true GROUP BY "user", severity'
    ' ON CONFLICT ("user", severity) DO UPDATE SET n = excluded.n'
)

# --- SQLite: row triggers -------------------------------------------------------------------

_SQLITE_ADD = (
    'INSERT INTO backapp_config_severity_counts ("user", severity, n)'
    ' VALUES (NEW."user", NEW.severity, 1)'
    ' ON CONFLICT ("user", severity) DO UPDATE SET n = n + 1;'
)
_SQLITE_SUB = (
    "UPDATE backapp_config_severity_counts SET n = n - 1"
    ' WHERE "user" = OLD."user" AND severity = OLD.severity;'
)
SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS backapp_config_severity_counts_insert"
    f" AFTER INSERT ON backapp_backup_config BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER IF NOT EXISTS backapp_config_severity_counts_delete"
    f" AFTER DELETE ON backapp_backup_config BEGIN {_SQLITE_SUB} END",
    "CREATE TRIGGER IF NOT EXISTS backapp_config_severity_counts_update"
    ' AFTER UPDATE OF severity, "user" ON backapp_backup_config'
    ' WHEN OLD.severity IS NOT NEW.severity OR OLD."user" IS NOT NEW."user"'
    f" BEGIN {_SQLITE_SUB} {_SQLITE_ADD} END",
]

# --- PostgreSQL: statement triggers over transition tables, a row trigger for updates ---------

_PG_ADD = (
    'INSERT INTO backapp_config_severity_counts ("user", severity, n)'
    ' SELECT "user", severity, COUNT(*) FROM {rows}'
    # In a fixed order: two statements adding to the same rows lock them in the same order.
    ' GROUP BY "user", severity ORDER BY "user", severity'
    ' ON CONFLICT ("user", severity) DO UPDATE SET n = backapp_config_severity_counts.n + excluded.n'
)
_PG_SUB = (
    "UPDATE backapp_config_severity_counts t SET n = t.n - d.n FROM"
    ' (SELECT "user", severity, COUNT(*) AS n FROM {rows} GROUP BY "user", severity) d'
    ' WHERE t."user" = d."user" AND t.severity = d.severity'
)
POSTGRES = [
    "CREATE OR REPLACE FUNCTION backapp_config_severity_counts_added() RETURNS trigger"
    f" LANGUAGE plpgsql AS $$ BEGIN {_PG_ADD.format(rows='added')}; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION backapp_config_severity_counts_removed() RETURNS trigger"
    f" LANGUAGE plpgsql AS $$ BEGIN {_PG_SUB.format(rows='removed')}; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION backapp_config_severity_counts_changed() RETURNS trigger"
    " LANGUAGE plpgsql AS $$ BEGIN"
    " UPDATE backapp_config_severity_counts SET n = n - 1"
    ' WHERE "user" = OLD."user" AND severity = OLD.severity;'
    ' INSERT INTO backapp_config_severity_counts ("user", severity, n)'
    ' VALUES (NEW."user", NEW.severity, 1)'
    ' ON CONFLICT ("user", severity) DO UPDATE SET n = backapp_config_severity_counts.n + 1;'
    " RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS backapp_config_severity_counts_insert ON backapp_backup_config",
    "CREATE TRIGGER backapp_config_severity_counts_insert AFTER INSERT ON backapp_backup_config"
    " REFERENCING NEW TABLE AS added FOR EACH STATEMENT"
    " EXECUTE FUNCTION backapp_config_severity_counts_added()",
    "DROP TRIGGER IF EXISTS backapp_config_severity_counts_delete ON backapp_backup_config",
    "CREATE TRIGGER backapp_config_severity_counts_delete AFTER DELETE ON backapp_backup_config"
    " REFERENCING OLD TABLE AS removed FOR EACH STATEMENT"
    " EXECUTE FUNCTION backapp_config_severity_counts_removed()",
    "DROP TRIGGER IF EXISTS backapp_config_severity_counts_update ON backapp_backup_config",
    "CREATE TRIGGER backapp_config_severity_counts_update"
    ' AFTER UPDATE OF severity, "user" ON backapp_backup_config FOR EACH ROW'
    ' WHEN (OLD.severity IS DISTINCT FROM NEW.severity OR OLD."user" IS DISTINCT FROM NEW."user")'
    " EXECUTE FUNCTION backapp_config_severity_counts_changed()",
]

TRIGGERS = ("insert", "delete", "update")


def _postgres(engine: object) -> bool:
    return getattr(engine, "engine_type", "") == "postgres"


async def create(engine: object) -> None:
    """The table, its triggers, the index and the back-fill."""
    postgres = _postgres(engine)
    run = engine.run_ddl  # type: ignore[attr-defined]
    await run(_TABLE.format(serial="BIGSERIAL" if postgres else "INTEGER"))
    await run(_UNIQUE)
    await run(_INDEX)
    for statement in POSTGRES if postgres else SQLITE:
        await run(statement)
    await run("DELETE FROM backapp_config_severity_counts")
    await run(_BACKFILL)


async def drop(engine: object) -> None:
    """Remove the triggers (and the functions on PostgreSQL) and the index; the table stays."""
    postgres = _postgres(engine)
    run = engine.run_ddl  # type: ignore[attr-defined]
    for name in TRIGGERS:
        on = " ON backapp_backup_config" if postgres else ""
        await run(f"DROP TRIGGER IF EXISTS backapp_config_severity_counts_{name}{on}")
    if postgres:
        for name in ("added", "removed", "changed"):
            await run(f"DROP FUNCTION IF EXISTS backapp_config_severity_counts_{name}()")
    await run("DROP INDEX IF EXISTS backapp_backup_config_user_severity_last_ok")


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="backups", description=DESCRIPTION)

    async def up() -> None:
        engine = engine_finder()
        assert engine is not None
        await create(engine)

    async def down() -> None:
        engine = engine_finder()
        assert engine is not None
        await drop(engine)
        await engine.run_ddl("DROP TABLE IF EXISTS backapp_config_severity_counts")

    manager.add_raw(up)
    manager.add_raw_backwards(down)
    return manager
