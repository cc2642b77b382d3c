"""``backapp``: run the server, apply migrations, create users.

backapp serve [--host H] [--port P] [--workers N] [--no-migrate]
backapp migrate
backapp user create --email E [--admin] [--password-stdin]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from typing import Any

from backend import __version__
from backend.settings import Settings

__all__ = ["main"]


class RedactQuery(logging.Filter):
    """Access-log lines keep the path and drop the query string (it may hold URL signatures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2].split("?", 1)[0]
            record.args = (*args[:2], path, *args[3:])
        return True


def log_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "backend.cli.RedactQuery"}},
        "formatters": {
            "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "access": {"format": "%(asctime)s %(levelname)s access: %(message)s"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["redact"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": level.upper(), "propagate": False},
            "backapp": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }


def run_migrations(quiet: bool = False) -> None:
    """Apply every pending Piccolo migration to ``DATABASE_URL``."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    async def go() -> None:
        from piccolo.engine.finder import engine_finder

        result = await run_forwards(app_name="all", migration_id="all")
        engine = engine_finder()
        from piccolo.engine.postgres import PostgresEngine

        if isinstance(engine, PostgresEngine) and engine.pool is not None:
            await engine.close_connection_pool()
        if not result.success:
            raise SystemExit(f"backapp: migrations failed: {result.message}")

    if quiet:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            asyncio.run(go())
    else:
        asyncio.run(go())


def _check_storage(settings: Settings) -> None:
    from backend.services.container import make_storage
    from backend.storage import StorageError

    storage = make_storage(settings)
    try:
        asyncio.run(storage.check())
    except StorageError as exc:
        raise SystemExit(
            f"backapp: storage is not usable ({storage.kind}, bucket {storage.bucket!r}): {exc}\n"
            "Check AWS_S3_BUCKET, AWS_S3_ENDPOINT, AWS_REGION and the credentials."
        ) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.host:
        os.environ["BACKAPP_HOST"] = args.host
    if args.port is not None:
        os.environ["BACKAPP_PORT"] = str(args.port)
    if args.workers is not None:
        os.environ["BACKAPP_WORKERS"] = str(args.workers)
    settings = Settings.from_env()
    # Every worker must share the secret; pin the generated one for the child processes.
    os.environ.setdefault("BACKAPP_SECRET_KEY", settings.secret_key.decode())
    if settings.auto_migrate and not args.no_migrate:
        run_migrations(quiet=True)
    _check_storage(settings)
    storage = (
        f"S3 bucket {settings.s3_bucket}"
        if settings.s3_bucket
        else (f"local files in {settings.data_dir / 'storage'}")
    )
    database = "PostgreSQL" if not settings.is_sqlite else settings.database_url
    print(
        f"BackApp {__version__} on http://{settings.host}:{settings.port} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''}; database {database}; "
        f"storage {storage})",
        flush=True,
    )
    uvicorn.run(
        "backend.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level),
        access_log=not args.no_access_log,
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    run_migrations(quiet=False)
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    from backend.db import bind_tables, make_engine
    from backend.errors import DomainError
    from backend.services.accounts import AccountService

    settings = Settings.from_env()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("backapp: the passwords differ", file=sys.stderr)
            return 2
    if settings.auto_migrate:
        run_migrations(quiet=True)

    async def go() -> None:
        bind_tables(make_engine(settings.database_url))
        user = await AccountService(settings).create_user(args.email, password, is_admin=args.admin)
        print(f"created {'admin ' if user.is_admin else ''}user {user.email} ({user.id})")

    try:
        asyncio.run(go())
    except DomainError as exc:
        print(f"backapp: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backapp",
        description="BackApp server. Settings come from the environment "
        "(see the README's configuration reference).",
    )
    parser.add_argument("--version", action="version", version=f"backapp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (migrates first unless disabled)")
    serve.add_argument("--host", help="listen address (BACKAPP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (BACKAPP_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (BACKAPP_WORKERS, default 1)")
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply migrations at start (BACKAPP_AUTO_MIGRATE=false)",
    )
    serve.add_argument("--no-access-log", action="store_true", help="do not log each request")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(func=cmd_migrate)

    user = sub.add_parser("user", help="manage accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create an account")
    create.add_argument("--email", required=True)
    create.add_argument("--admin", action="store_true", help="make it an administrator")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of a prompt",
    )
    create.set_defaults(func=cmd_user_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:  # a bad setting in the environment
        print(f"backapp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
