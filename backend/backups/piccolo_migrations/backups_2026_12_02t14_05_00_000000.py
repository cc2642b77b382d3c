"""Each owner's backup totals per status (how many, and their verified bytes), kept by the
database itself so that the dashboard reads a handful of rows instead of every backup.

``backapp_backup_totals`` holds one row per (user, status). Triggers on ``backapp_backup_log``
keep it in the transaction of every write that adds, removes or changes a backup's status, size
or owner, whichever code path makes it (backup start and end, cancel, interruption, retention,
catalog rebuild, a deleted user's cascade, or a statement typed by hand):

* SQLite: row triggers (``AFTER INSERT``, ``AFTER DELETE``, ``AFTER UPDATE OF status, size,
  "user"`` when one of them really changed);
* PostgreSQL: statement triggers over transition tables for inserts and deletes (one upsert per
  statement, so a bulk ``COPY`` or a retention batch costs one statement, not one per row), and a
  row trigger with a ``WHEN`` for updates (the frequent progress writes of a running backup do
  not call it at all).

A removal only subtracts from an existing row (never inserts), so a user's cascade, which also
removes that user's totals, never re-creates them. The back-fill counts what is there.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T14:05:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "each owner's backup totals per status, kept by triggers"

_TABLE = (
    "CREATE TABLE IF NOT EXISTS backapp_backup_totals ("
    " id {serial} PRIMARY KEY,"
    ' "user" UUID NOT NULL REFERENCES backapp_user (id) ON DELETE CASCADE,'
    " status VARCHAR(16) NOT NULL,"
    " n BIGINT NOT NULL DEFAULT 0,"
    " bytes BIGINT NOT NULL DEFAULT 0)"
)
_UNIQUE = (
    "CREATE UNIQUE INDEX IF NOT EXISTS backapp_backup_totals_user_status"
    ' ON backapp_backup_totals ("user", status)'
)
_BACKFILL = (
    'INSERT INTO backapp_backup_totals ("user", status, n, bytes)'
    ' SELECT "user", status, COUNT(*), COALESCE(SUM(size), 0) FROM backapp_backup_log'
    ' WHERE true GROUP BY "user", status'
    ' ON CONFLICT ("user", status) DO UPDATE SET n = excluded.n, bytes = excluded.bytes'
)

# --- SQLite: row triggers -------------------------------------------------------------------

_SQLITE_ADD = (
    'INSERT INTO backapp_backup_totals ("user", status, n, bytes)'
    ' VALUES (NEW."user", NEW.status, 1, COALESCE(NEW.size, 0))'
    ' ON CONFLICT ("user", status) DO UPDATE SET n = n + 1, bytes = bytes + excluded.bytes;'
)
_SQLITE_SUB = (
    "UPDATE backapp_backup_totals SET n = n - 1, bytes = bytes - COALESCE(OLD.size, 0)"
    ' WHERE "user" = OLD."user" AND status = OLD.status;'
)
SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS backapp_backup_totals_insert AFTER INSERT ON backapp_backup_log"
    f" BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER IF NOT EXISTS backapp_backup_totals_delete AFTER DELETE ON backapp_backup_log"
    f" BEGIN {_SQLITE_SUB} END",
    "CREATE TRIGGER IF NOT EXISTS backapp_backup_totals_update"
    ' AFTER UPDATE OF status, size, "user" ON backapp_backup_log'
    ' WHEN OLD.status IS NOT NEW.status OR OLD.size IS NOT NEW.size OR OLD."user" IS NOT NEW."user"'
    f" BEGIN {_SQLITE_SUB} {_SQLITE_ADD} END",
]

# --- PostgreSQL: statement triggers over transition tables, a row trigger for updates ---------

_PG_ADD = (
    'INSERT INTO backapp_backup_totals ("user", status, n, bytes)'
    ' SELECT "user", status, COUNT(*), COALESCE(SUM(size), 0) FROM {rows}'
    # In a fixed order: two statements adding to the same rows lock them in the same order.
    ' GROUP BY "user", status ORDER BY "user", status'
    ' ON CONFLICT ("user", status) DO UPDATE'
    " SET n = backapp_backup_totals.n + excluded.n,"
    " bytes = backapp_backup_totals.bytes + excluded.bytes"
)
_PG_SUB = (
    "UPDATE backapp_backup_totals t SET n = t.n - d.n, bytes = t.bytes - d.bytes FROM"
    ' (SELECT "user", status, COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM {rows}'
    ' GROUP BY "user", status) d WHERE t."user" = d."user" AND t.status = d.status'
)
POSTGRES = [
    "CREATE OR REPLACE FUNCTION backapp_backup_totals_added() RETURNS trigger"
    f" LANGUAGE plpgsql AS $$ BEGIN {_PG_ADD.format(rows='added')}; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION backapp_backup_totals_removed() RETURNS trigger"
    f" LANGUAGE plpgsql AS $$ BEGIN {_PG_SUB.format(rows='removed')}; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION backapp_backup_totals_changed() RETURNS trigger"
    " LANGUAGE plpgsql AS $$ BEGIN"
    " UPDATE backapp_backup_totals SET n = n - 1, bytes = bytes - COALESCE(OLD.size, 0)"
    ' WHERE "user" = OLD."user" AND status = OLD.status;'
    ' INSERT INTO backapp_backup_totals ("user", status, n, bytes)'
    ' VALUES (NEW."user", NEW.status, 1, COALESCE(NEW.size, 0))'
    ' ON CONFLICT ("user", status) DO UPDATE'
    " SET n = backapp_backup_totals.n + 1, bytes = backapp_backup_totals.bytes + excluded.bytes;"
    " RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS backapp_backup_totals_insert ON backapp_backup_log",
    "CREATE TRIGGER backapp_backup_totals_insert AFTER INSERT ON backapp_backup_log"
    " REFERENCING NEW TABLE AS added FOR EACH STATEMENT"
    " EXECUTE FUNCTION backapp_backup_totals_added()",
    "DROP TRIGGER IF EXISTS backapp_backup_totals_delete ON backapp_backup_log",
    "CREATE TRIGGER backapp_backup_totals_delete AFTER DELETE ON backapp_backup_log"
    " REFERENCING OLD TABLE AS removed FOR EACH STATEMENT"
    " EXECUTE FUNCTION backapp_backup_totals_removed()",
    "DROP TRIGGER IF EXISTS backapp_backup_totals_update ON backapp_backup_log",
    "CREATE TRIGGER backapp_backup_totals_update"
    ' AFTER UPDATE OF status, size, "user" ON backapp_backup_log FOR EACH ROW'
    " WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.size IS DISTINCT FROM NEW.size"
    ' OR OLD."user" IS DISTINCT FROM NEW."user")'
    " EXECUTE FUNCTION backapp_backup_totals_changed()",
]

TRIGGERS = ("insert", "delete", "update")


def _postgres(engine: object) -> bool:
    return getattr(engine, "engine_type", "") == "postgres"


async def create(engine: object) -> None:
    """The table, its triggers and the back-fill (also used by the fleet bench after a bulk
    load with the triggers dropped)."""
    postgres = _postgres(engine)
    run = engine.run_ddl  # type: ignore[attr-defined]
    await run(_TABLE.format(serial="BIGSERIAL" if postgres else "INTEGER"))
    await run(_UNIQUE)
    for statement in POSTGRES if postgres else SQLITE:
        await run(statement)
    await run("DELETE FROM backapp_backup_totals")
    await run(_BACKFILL)


async def drop(engine: object) -> None:
    """Remove the triggers (and the functions on PostgreSQL); the table stays."""
    postgres = _postgres(engine)
    run = engine.run_ddl  # type: ignore[attr-defined]
    for name in TRIGGERS:
        on = " ON backapp_backup_log" if postgres else ""
        await run(f"DROP TRIGGER IF EXISTS backapp_backup_totals_{name}{on}")
    if postgres:
        for name in ("added", "removed", "changed"):
            await run(f"DROP FUNCTION IF EXISTS backapp_backup_totals_{name}()")


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
        await engine.run_ddl("DROP TABLE IF EXISTS backapp_backup_totals")

    manager.add_raw(up)
    manager.add_raw_backwards(down)
    return manager
