"""``backapp maintenance run`` and ``backapp check``: the server's retention, pruning and storage
check, run by hand on a machine with the server's settings (database and storage credentials)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from backend.settings import Settings

__all__ = ["add_commands"]

T = TypeVar("T")


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Bind the tables to the configured database, build the storage, and run ``work(tasks)``."""
    from backend.db import run_on_database
    from backend.services.container import make_storage
    from backend.services.tasks import PeriodicTasks

    def tasks() -> PeriodicTasks:
        holder = f"backapp command on {socket.gethostname()} pid {os.getpid()}"
        return PeriodicTasks(settings, make_storage(settings), holder=holder)

    return run_on_database(settings.database_url, lambda: work(tasks()))


def cmd_maintenance_run(args: argparse.Namespace) -> int:
    """Retention then pruning, once, now, under the same lease as the periodic task."""
    from backend.services.repo_checks import size_text

    settings = Settings.from_env()

    async def work(tasks: Any) -> Any:
        tasks.drain = True  # everything due, not one round's budget of it
        deadline = time.monotonic() + args.wait
        while True:
            report = await tasks.run_maintenance()
            if report is not None or time.monotonic() >= deadline:
                return report
            await asyncio.sleep(1.0)

    report = _run(settings, work)
    if report is None:
        print(
            "backapp: another server process is running maintenance right now; try again later",
            file=sys.stderr,
        )
        return 2
    retention, prune, compaction = report.retention, report.prune, report.compaction
    out = {
        "expired": retention.expired,
        "expiredSnapshots": retention.snapshots,
        "archiveBytes": retention.archive_bytes,
        "deleted": prune.deleted,
        "packs": prune.packs,
        "indexes": prune.indexes,
        "snapshotObjects": prune.snapshots,
        "bytesFreed": report.bytes_freed,
        "deferred": prune.deferred,
        "compaction": compaction.to_json(prune.compacted_packs, prune.compacted_bytes),
        "failed": [{"what": what, "reason": why} for what, why in retention.failed + prune.failed],
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        archives = len(retention.expired) - len(retention.snapshots)
        print(
            f"retention: {len(retention.expired)} backup(s) expired "
            f"({archives} archive(s), {len(retention.snapshots)} snapshot(s))"
        )
        print(
            f"pruning: deleted {prune.packs} pack(s), {prune.indexes} index object(s), "
            f"{prune.snapshots} snapshot object(s)"
        )
        print(
            f"compaction: asked {len(compaction.requested)} agent(s) to compact; "
            f"{len(compaction.committed)} compaction(s) committed since the last round; "
            f"{prune.compacted_packs} replaced pack(s) deleted "
            f"({size_text(prune.compacted_bytes)})"
        )
        exact = f" ({report.bytes_freed} bytes)" if report.bytes_freed >= 1024 else ""
        print(f"freed {size_text(report.bytes_freed)}{exact}")
        for repo in prune.deferred:
            print(
                f"deferred: repository {repo} (a snapshot or a compaction is running there; "
                "next round)"
            )
        for item in out["failed"]:
            print(f"failed: {item['what']}: {item['reason']} (retried next round)", file=sys.stderr)
    return 1 if out["failed"] else 0


def cmd_undo_compaction(args: argparse.Namespace) -> int:
    """Undo a committed compaction while its retired packs are still held."""
    from backend.errors import DomainError

    settings = Settings.from_env()

    async def work(tasks: Any) -> int:
        count: int = await tasks.compaction.undo(args.compaction_id)
        return count

    try:
        count = _run(settings, work)
    except (DomainError, ValueError) as exc:
        print(f"backapp: {exc}", file=sys.stderr)
        return 1
    print(f"compaction {args.compaction_id} undone: {count} snapshot(s) use their old packs again")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Every pack a live snapshot needs is in storage with its recorded size."""
    from backend.services.checks import CheckService
    from backend.services.repo_checks import size_text

    settings = Settings.from_env()

    async def work(tasks: Any) -> Any:
        return await CheckService(tasks.prune.storage, settings).run(alert=not args.no_alert)

    report = _run(settings, work)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(
            f"checked {report.snapshots} live snapshot(s) in {report.repositories} "
            f"repository(ies): {report.packs} pack(s), {size_text(report.bytes)}"
        )
        for problem in report.problems:
            print(
                f"config {problem.config_name!r} ({problem.config_id}), snapshot "
                f"{problem.backup_id}: {problem.message}"
            )
        if report.problems:
            print(f"{len(report.problems)} problem(s) found", file=sys.stderr)
        else:
            print("everything is in place")
    return 1 if report.problems else 0


def add_commands(sub: Any) -> None:
    """Add ``maintenance run`` and ``check`` to the ``backapp`` parser's subcommands."""
    maintenance = sub.add_parser("maintenance", help="retention and pruning, by hand")
    maintenance_sub = maintenance.add_subparsers(dest="maintenance_command", required=True)
    run = maintenance_sub.add_parser(
        "run",
        help="apply every config's retention policy and prune unused snapshot data, once, now",
    )
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait while a server process runs maintenance (default 60)",
    )
    run.set_defaults(func=cmd_maintenance_run)
    undo = maintenance_sub.add_parser(
        "undo-compaction",
        help="put back the pack bitmaps a compaction replaced (within its grace window)",
    )
    undo.add_argument("compaction_id", metavar="ID", help="the compaction's id")
    undo.set_defaults(func=cmd_undo_compaction)
    check = sub.add_parser(
        "check",
        help="check that every pack a live snapshot needs is in storage with its size",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--no-alert", action="store_true", help="report only; do not open alerts for problems"
    )
    check.set_defaults(func=cmd_check)
