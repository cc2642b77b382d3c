"""``backapp``: run the server, apply migrations, create users.

backapp serve [--host H] [--port P] [--workers N] [--no-migrate]
backapp migrate
backapp user create --email E [--admin] [--password-stdin]
backapp s3 lifecycle [--apply] [--glacier-ir-days 30] [--glacier-days 90] [--expire-days N]
backapp restore BACKUP_ID --to DIR
backapp maintenance run [--json] [--wait SECONDS]
backapp maintenance undo-compaction ID
backapp check [--json] [--no-alert]
backapp catalog backup|list|restore|rebuild (see backend/cli_catalog.py)
backapp user password --email E [--password-stdin]
backapp agent-release keygen|sign|add|list|remove (see backend/cli_releases.py)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from backend import __version__
from backend.settings import Settings
from desktop_agent.engine import install_log_redaction
from desktop_agent.engine.console import run_to_exit_status

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
    from backend.storage import ObjectStoreError

    storage = make_storage(settings)
    try:
        asyncio.run(storage.check())
    except ObjectStoreError as exc:
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
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise SystemExit(f"backapp: {exc}") from None
    if os.environ.get("FORWARDED_ALLOW_IPS") is not None:
        print(
            "backapp: FORWARDED_ALLOW_IPS is ignored; name your reverse proxies in "
            "BACKAPP_TRUSTED_PROXIES",
            file=sys.stderr,
        )
    install_log_redaction()
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
        "backend.app:create_served_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level),
        access_log=not args.no_access_log,
        # X-Forwarded-For is believed only from the proxies named in BACKAPP_TRUSTED_PROXIES.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    run_migrations(quiet=False)
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    from backend.cli_catalog import read_new_password
    from backend.db import bind_tables, make_engine
    from backend.errors import DomainError
    from backend.services.accounts import AccountService

    settings = Settings.from_env()
    password = read_new_password(args, "Password: ")
    if password is None:
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


def lifecycle_rules(
    *, glacier_ir_days: int, glacier_days: int, expire_days: int | None
) -> dict[str, Any]:
    """The spec's lifecycle rules for ``users/``: transitions to GLACIER_IR then GLACIER (a day
    count of 0 leaves that step out), incomplete multipart uploads aborted after 7 days, and an
    Expiration only when asked for."""
    transitions: list[dict[str, Any]] = []
    if glacier_ir_days:
        transitions.append({"Days": glacier_ir_days, "StorageClass": "GLACIER_IR"})
    if glacier_days:
        if glacier_ir_days and glacier_days <= glacier_ir_days:
            raise ValueError("--glacier-days must be more than --glacier-ir-days")
        transitions.append({"Days": glacier_days, "StorageClass": "GLACIER"})
    rule: dict[str, Any] = {
        "ID": "archive-old-backups",
        "Status": "Enabled",
        "Filter": {"Prefix": "users/"},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }
    if transitions:
        rule["Transitions"] = transitions
    if expire_days is not None:
        last = max([int(t["Days"]) for t in transitions], default=0)
        if expire_days <= last:
            raise ValueError("--expire-days must be more than the last transition's days")
        rule["Expiration"] = {"Days": expire_days}
    return {"Rules": [rule]}


EXPIRATION_WARNING = (
    "warning: an S3 Expiration deletes every object older than {days} days by age alone. It does "
    "not know BackApp's rule that the newest completed backup of each configuration is never "
    "deleted (a machine that stopped backing up loses its last copy), and the history keeps "
    "showing those backups as completed. Prefer each configuration's retentionDays, which the "
    "server enforces with both guarantees; use --expire-days only as a safety net well beyond "
    "the longest retentionDays."
)


def cmd_s3_lifecycle(args: argparse.Namespace) -> int:
    import json

    for name in ("glacier_ir_days", "glacier_days", "expire_days"):
        value = getattr(args, name)
        if value is not None and value < 0:
            print(f"backapp: --{name.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2
    try:
        rules = lifecycle_rules(
            glacier_ir_days=args.glacier_ir_days,
            glacier_days=args.glacier_days,
            expire_days=args.expire_days,
        )
    except ValueError as exc:
        print(f"backapp: {exc}", file=sys.stderr)
        return 2
    if args.expire_days is not None:
        print(EXPIRATION_WARNING.format(days=args.expire_days), file=sys.stderr)
    if args.glacier_days:
        print(
            "note: objects in GLACIER (Flexible Retrieval) must be restored in S3 before they can "
            "be downloaded; restores of backups older than "
            f"{args.glacier_days} days need that step first.",
            file=sys.stderr,
        )
    if not args.apply:
        print(json.dumps(rules, indent=2))
        return 0
    settings = Settings.from_env()
    if not settings.s3_bucket:
        print(
            "backapp: no S3 bucket is configured (set AWS_S3_BUCKET); lifecycle rules apply to "
            "an S3 bucket only",
            file=sys.stderr,
        )
        return 2
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session().client(
        "s3",
        region_name=settings.s3_region,
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
    )
    try:
        client.put_bucket_lifecycle_configuration(
            Bucket=settings.s3_bucket, LifecycleConfiguration=rules
        )
    except (BotoCoreError, ClientError) as exc:
        print(f"backapp: could not apply the lifecycle rules: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rules, indent=2))
    print(f"applied to bucket {settings.s3_bucket}", file=sys.stderr)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from backend.db import bind_tables, make_engine
    from backend.errors import DomainError
    from backend.services.container import make_storage
    from backend.services.server_side import (
        LocalStorageTransport,
        ServerRestoreSource,
        load_restorable,
    )
    from backend.storage import LocalStorage
    from desktop_agent.engine import AgentError, RestoreOptions, Restorer

    settings = Settings.from_env()
    storage = make_storage(settings)

    async def load() -> dict[str, Any]:
        engine = make_engine(settings.database_url)
        bind_tables(engine)
        return await load_restorable(args.backup_id)

    try:
        row = asyncio.run(load())
    except DomainError as exc:
        print(f"backapp: {exc.detail}", file=sys.stderr)
        return 1
    source = ServerRestoreSource(settings, storage, {str(row["id"]): row})
    transport = LocalStorageTransport(storage) if isinstance(storage, LocalStorage) else None
    try:
        with Restorer(source, transport=transport) as restorer:
            result = restorer.restore(str(row["id"]), RestoreOptions(target=Path(args.to)))
    except AgentError as exc:
        print(f"backapp: restore failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {result.files} files, {result.dirs} folders, {result.links} links "
        f"({result.bytes} bytes) from {result.filename} into {result.target}"
    )
    if result.unchanged:
        print(f"{result.unchanged} files already there with the same content were left alone")
    for path, name in result.renamed:  # an existing file that differs is never replaced
        print(f"kept {path} (it differs): restored beside it as {name}")
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
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
    from backend.cli_catalog import add_user_commands

    add_user_commands(user_sub)

    s3 = sub.add_parser("s3", help="S3 bucket housekeeping")
    s3_sub = s3.add_subparsers(dest="s3_command", required=True)
    lifecycle = s3_sub.add_parser(
        "lifecycle",
        help="print (or apply) the bucket's lifecycle rules: users/ moves to GLACIER_IR, then "
        "GLACIER",
    )
    lifecycle.add_argument(
        "--apply", action="store_true", help="apply them to AWS_S3_BUCKET instead of printing"
    )
    lifecycle.add_argument("--glacier-ir-days", type=int, default=30, help="0: no GLACIER_IR step")
    lifecycle.add_argument("--glacier-days", type=int, default=90, help="0: no GLACIER step")
    lifecycle.add_argument(
        "--expire-days",
        type=int,
        default=None,
        help="also delete objects this old (off by default: see the warning it prints)",
    )
    lifecycle.set_defaults(func=cmd_s3_lifecycle)

    restore = sub.add_parser(
        "restore", help="download, verify and extract one backup on this server"
    )
    restore.add_argument("backup_id")
    restore.add_argument("--to", required=True, help="folder to restore into (created if needed)")
    restore.set_defaults(func=cmd_restore)

    from backend.cli_catalog import add_commands as add_catalog_commands
    from backend.cli_maintenance import add_commands

    add_commands(sub)
    add_catalog_commands(sub, migrate=run_migrations)
    from backend.cli_releases import add_commands as add_release_commands

    add_release_commands(sub, migrate=run_migrations)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``backapp`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (``EXIT_BROKEN_PIPE`` when the reader of its output went away: ``backapp s3 lifecycle | head``)."""
    return run_to_exit_status(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:  # a bad setting in the environment
        print(f"backapp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
