"""``backapp-agent snapshots`` (this machine's incremental backups) and ``backapp-agent ls`` (the
files of one snapshot)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from desktop_agent.engine import (
    AgentError,
    AgentSettings,
    InvalidRecoveryCode,
    NotFoundError,
    OrganisationSnapshots,
    SnapshotEntry,
    Snapshots,
    load_settings,
    parse_code,
)

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    load_key,
    read_code_from_stdin,
)
from .display import bytes_or_unknown, count_or_unknown, file_line, listed_at, print_listing
from .restore import lookup


def cmd_snapshots(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        with Snapshots.from_settings(settings, load_key(settings)) as snaps:
            found = snaps.list(config_id=args.config_id, limit=args.limit, agent_id=args.agent_id)
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    print_listing(
        found,
        as_json=args.json,
        key="snapshots",
        json_row=lambda b: {
            "id": b.id,
            "configId": b.config_id,
            "configName": b.config_name,
            "files": b.files_processed,
            "size": b.size,
            "newBytes": b.new_bytes,
            "startedAt": b.started_at,
            "completedAt": b.completed_at,
        },
        empty="No snapshots yet.",
        header=f"{'ID':36}  {'DATE (UTC)':19}  {'FILES':>9}  {'SIZE':>10}  {'NEW':>10}  CONFIG",
        line=lambda b: (
            f"{b.id:36}  {listed_at(b.completed_at, b.started_at):19}  "
            f"{count_or_unknown(b.files_processed):>9}  {bytes_or_unknown(b.size):>10}  "
            f"{bytes_or_unknown(b.new_bytes):>10}  {b.config_name or b.config_id}"
        ),
    )
    return EXIT_OK


def _line(e: SnapshotEntry) -> str:
    return file_line(
        kind=e.kind, mode=e.mode, size=e.size, mtime=e.mtime_ns / 1e9, name=e.path, link=e.target
    )


def cmd_ls(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.organisation_code_stdin:
        return _organisation_ls(args, settings)
    try:
        with Snapshots.from_settings(settings, load_key(settings)) as snaps:
            info = lookup(snaps.client, args.backup_id)
            agent_id = info.agent_id if info is not None else None
            _print_entries(args, snaps, agent_id)
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    return EXIT_OK


def _organisation_ls(args: argparse.Namespace, settings: AgentSettings) -> int:
    """``ls --organisation-code-stdin``: an administrator lists a snapshot of any machine."""
    code = read_code_from_stdin()
    if code is None:
        return EXIT_USAGE
    try:
        parse_code(code)  # a typo is told before the server is asked anything
    except InvalidRecoveryCode as exc:
        err(str(exc))
        return EXIT_USAGE
    try:
        with OrganisationSnapshots.connect(settings, load_key(settings), code) as snaps:
            found = snaps.open(args.backup_id)
            _print_entries(args, snaps, found.agent_id)
    except NotFoundError:
        err(
            f"no snapshot {args.backup_id} that an administrator may list with the organisation "
            "code (this machine must be an administrator's)"
        )
        return EXIT_FAILED
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    return EXIT_OK


def _print_entries(args: argparse.Namespace, snaps: Snapshots, agent_id: str | None) -> None:
    """The snapshot's entries below ``args.path``, one line (or JSON object) each."""
    for entry in snaps.entries(args.backup_id, args.path, agent_id=agent_id):
        if args.json:
            sys.stdout.write(
                json.dumps(
                    {
                        "path": entry.path,
                        "type": entry.kind,
                        "size": entry.size,
                        "mode": entry.mode,
                        "mtime": datetime.fromtimestamp(entry.mtime_ns / 1e9, UTC)
                        .isoformat()
                        .replace("+00:00", "Z"),
                        **({"target": entry.target} if entry.kind == "symlink" else {}),
                    }
                )
                + "\n"
            )
        else:
            print(_line(entry))
