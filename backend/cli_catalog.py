"""``backapp catalog``: copies of the server's database in the bucket, and rebuilding the history
from the bucket alone, run by hand with the server's settings (database, storage, secret).

backapp catalog backup [--json]
backapp catalog list [--json]
backapp catalog restore (--latest | --from KEY) [--force] [--json]
backapp catalog rebuild --from-bucket [--force] [--json]
backapp user password --email E [--password-stdin]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from backend.settings import Settings

__all__ = ["add_commands", "read_new_password"]

T = TypeVar("T")


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Bind the tables to the configured database, build the catalog service, run ``work``."""
    from backend.db import run_on_database
    from backend.services.catalog.service import CatalogService
    from backend.services.container import make_storage

    return run_on_database(
        settings.database_url, lambda: work(CatalogService(settings, make_storage(settings)))
    )


def read_new_password(args: argparse.Namespace, prompt: str) -> str | None:
    """A new password: the first line of standard input with ``--password-stdin``, else asked
    twice at the terminal (``prompt``, then "Again: "); None when the two answers differ."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(prompt)
    return password if getpass.getpass("Again: ") == password else None


def _fail(message: str) -> int:
    print(f"backapp: {message}", file=sys.stderr)
    return 1


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the database into the bucket now, then keep the newest ``BACKAPP_CATALOG_KEEP``."""
    from backend.services.catalog.sealed import CatalogError
    from backend.storage import ObjectStoreError

    settings = Settings.from_env()

    async def work(catalog: Any) -> tuple[Any, list[str]]:
        copy = await catalog.backup()
        return copy, await catalog.prune()

    try:
        copy, removed = _run(settings, work)
    except (CatalogError, ObjectStoreError) as exc:
        return _fail(f"catalog backup failed: {exc}")
    if args.json:
        print(json.dumps({"copy": copy.to_json(), "removed": removed}, indent=2))
    else:
        print(f"catalog copy written to {copy.key} ({copy.size} bytes)")
        for key in removed:
            print(f"removed old copy {key}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """The catalog copies in the bucket, oldest first."""
    from backend.storage import ObjectStoreError

    settings = Settings.from_env()

    async def work(catalog: Any) -> list[Any]:
        return list(await catalog.copies())

    try:
        copies = _run(settings, work)
    except ObjectStoreError as exc:
        return _fail(f"could not list the catalog copies: {exc}")
    if args.json:
        print(json.dumps([c.to_json() for c in copies], indent=2))
    elif not copies:
        print("no catalog copy in the bucket yet")
    for copy in [] if args.json else copies:
        print(f"{copy.key}  {copy.size} bytes  schema {copy.schema}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace the database with a catalog copy; refuses a non-empty one without ``--force``."""
    from backend.services.catalog.sealed import CatalogError
    from backend.storage import ObjectStoreError

    settings = Settings.from_env()

    async def work(catalog: Any) -> Any:
        return await catalog.restore(args.from_key, force=args.force)

    try:
        report = _run(settings, work)
    except (CatalogError, ObjectStoreError) as exc:
        return _fail(f"catalog restore failed, nothing was changed: {exc}")
    out = {
        "key": report.key,
        "created": report.created,
        "database": report.database,
        "users": report.users,
        "agents": report.agents,
        "configs": report.configs,
        "backups": report.backups,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"restored the catalog copy {report.key} (made {report.created})")
        print(
            f"the database holds {report.users} user(s), {report.agents} agent(s), "
            f"{report.configs} configuration(s) and {report.backups} backup(s)"
        )
        print("start the server (backapp serve applies any newer migrations)")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Recreate the backup history from the metadata objects in the bucket."""
    from backend.services.catalog.rebuild import rebuild_from_bucket
    from backend.services.catalog.sealed import CatalogError
    from backend.storage import ObjectStoreError

    if not args.from_bucket:
        return _fail("say where to rebuild from: --from-bucket")
    settings = Settings.from_env()
    args.migrate(True)  # an empty database gets its tables first

    async def work(catalog: Any) -> Any:
        return await rebuild_from_bucket(catalog.storage, settings.secret_key, force=args.force)

    try:
        report = _run(settings, work)
    except (CatalogError, ObjectStoreError) as exc:
        return _fail(f"rebuild failed: {exc}")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 1 if report.failed else 0


def cmd_user_password(args: argparse.Namespace) -> int:
    """Set an account's password (the accounts a rebuild recreates have none)."""
    from backend.db import bind_tables, make_engine
    from backend.errors import DomainError
    from backend.services.accounts import AccountService

    settings = Settings.from_env()
    password = read_new_password(args, "New password: ")
    if password is None:
        return _fail("the passwords differ")

    async def go() -> None:
        bind_tables(make_engine(settings.database_url))
        await AccountService(settings).set_password(args.email, password)

    try:
        asyncio.run(go())
    except DomainError as exc:
        return _fail(exc.detail)
    print(f"password of {args.email} set")
    return 0


def add_user_commands(user_sub: Any) -> None:
    """Add ``user password`` to the ``backapp user`` subcommands."""
    password = user_sub.add_parser("password", help="set an account's password")
    password.add_argument("--email", required=True)
    password.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of a prompt",
    )
    password.set_defaults(func=cmd_user_password)


def add_commands(sub: Any, *, migrate: Callable[[bool], None]) -> None:
    """Add ``catalog backup|list|restore|rebuild`` to the ``backapp`` parser's subcommands;
    ``migrate(quiet)`` applies the pending migrations (``backapp migrate``)."""
    catalog = sub.add_parser(
        "catalog", help="copies of the server's database in the bucket, and rebuilding from it"
    )
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)

    backup = catalog_sub.add_parser(
        "backup", help="copy the database, encrypted, into the bucket's server/catalog/ now"
    )
    backup.add_argument("--json", action="store_true", help="print the result as JSON")
    backup.set_defaults(func=cmd_backup)

    listing = catalog_sub.add_parser("list", help="list the catalog copies in the bucket")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(func=cmd_list)

    restore = catalog_sub.add_parser(
        "restore", help="replace the database with a catalog copy (stop the server first)"
    )
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="the newest copy in the bucket")
    which.add_argument("--from", dest="from_key", metavar="KEY", help="this copy's object key")
    restore.add_argument(
        "--force", action="store_true", help="replace a database that is not empty"
    )
    restore.add_argument("--json", action="store_true", help="print the result as JSON")
    restore.set_defaults(func=cmd_restore)

    rebuild = catalog_sub.add_parser(
        "rebuild",
        help="recreate the backup history from the metadata objects beside each backup",
    )
    rebuild.add_argument(
        "--from-bucket", action="store_true", help="read the bucket (the only source there is)"
    )
    rebuild.add_argument(
        "--force", action="store_true", help="rebuild into a database that already has backups"
    )
    rebuild.add_argument("--json", action="store_true", help="print the report as JSON")
    rebuild.set_defaults(func=cmd_rebuild, migrate=migrate)
