"""``backapp-agent backups`` (what can be restored) and ``backapp-agent restore`` (download, verify
and extract one backup, or ``--list`` it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from desktop_agent.engine import (
    AgentError,
    AgentSettings,
    ApiClient,
    BackupCancelled,
    BackupInfo,
    CancelToken,
    EventSink,
    InvalidRecoveryCode,
    MemberInfo,
    NotFoundError,
    OrganisationSnapshots,
    Recovery,
    RepoKeyStore,
    RepositoryKeyMissing,
    RestoreError,
    RestoreOptions,
    Restorer,
    RestoreResult,
    RestoreSource,
    RestoreTicket,
    Snapshots,
    agent_bandwidth,
    config_dir,
    default_target_name,
    load_settings,
    parse_code,
    printable,
)

from .common import (
    EXIT_FAILED,
    EXIT_FILE_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    cancel_on_signals,
    connect,
    err,
    load_key,
    read_code_from_stdin,
    signal_handlers,
)
from .display import (
    MAX_SKIPS_SHOWN,
    JsonLines,
    RestoreDisplay,
    bytes_or_unknown,
    count_or_unknown,
    file_line,
    human_bytes,
    listed_at,
    print_listing,
)


def cmd_backups(args: argparse.Namespace) -> int:
    """The completed backups of the assigned configs, newest first (``--json``: one object)."""
    settings = load_settings()
    with connect(settings) as client:
        if args.agent_id:
            try:
                found = client.list_backups(
                    config_id=args.config_id, limit=args.limit, agent_id=args.agent_id
                )
            except NotFoundError:
                err(
                    f"no agent {args.agent_id} whose backups this machine may read: the owner "
                    "marks in the web console that this machine replaces it"
                )
                return EXIT_FAILED
        else:
            found = client.list_backups(config_id=args.config_id, limit=args.limit)
    print_listing(
        found,
        as_json=args.json,
        key="backups",
        json_row=lambda b: {
            "id": b.id,
            "configId": b.config_id,
            "configName": b.config_name,
            "filename": b.filename,
            "s3Path": b.s3_path,
            "size": b.size,
            "sha256": b.sha256,
            "files": b.files_processed,
            "startedAt": b.started_at,
            "completedAt": b.completed_at,
            "status": b.status,
            "type": b.type,
            "agentId": b.agent_id,
        },
        empty="No backups to restore.",
        header=f"{'ID':36}  {'DATE (UTC)':19}  {'SIZE':>10}  {'FILES':>8}  {'STATUS':9}  CONFIG",
        line=lambda b: (
            f"{b.id:36}  {listed_at(b.completed_at, b.started_at):19}  "
            f"{bytes_or_unknown(b.size):>10}  {count_or_unknown(b.files_processed):>8}  "
            f"{b.status:9}  {b.config_name or b.config_id}  {b.filename}"
        ),
    )
    return EXIT_OK


def lookup(client: ApiClient, backup_id: str) -> BackupInfo | None:
    """What the server says of one backup this agent may restore (its type, and the agent whose
    repository holds a snapshot), or ``None`` when it says nothing (then the restore endpoint
    answers with the reason). A server older than ``GET /api/agent/backups/{id}`` answers 404
    to it: the listing of this agent's configs is searched instead."""
    try:
        return client.backup(backup_id)
    except NotFoundError:
        pass
    for b in client.list_backups(limit=1000):
        if b.id == backup_id:
            return b
    return None


def _default_target(info: BackupInfo | None, backup_id: str) -> Path:
    """./backapp-restore-<config>-<date>, with -2, -3... if that exists."""
    config_name, filename = "", backup_id
    if info is not None:
        config_name, filename = info.config_name or info.config_id[:8], info.filename
    base = Path.cwd() / default_target_name(config_name, filename)
    target, n = base, 1
    while target.exists() or target.is_symlink():
        n += 1
        target = base.with_name(f"{base.name}-{n}")
    return target


def _options(args: argparse.Namespace, info: BackupInfo | None) -> RestoreOptions:
    """What ``restore``'s options ask for; the default target is named after ``info``."""
    target: Path | None = None
    if args.to is not None:
        target = args.to.expanduser().absolute()
    elif not args.in_place and not args.list:
        target = _default_target(info, args.backup_id)
    return RestoreOptions(
        target=target,
        in_place=args.in_place,
        overwrite=args.overwrite,
        patterns=tuple(args.patterns),
        list_only=args.list,
    )


def _list_line(m: MemberInfo) -> str:
    return file_line(
        kind=m.kind, mode=m.mode, size=m.size, mtime=m.mtime, name=m.name, link=m.linkname
    )


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore (or ``--list``) one backup; 3 if members were skipped or patterns matched nothing."""
    settings = load_settings()
    code: str | None = None
    if args.organisation_code_stdin and args.recovery_code_stdin:
        err("give one code: --recovery-code-stdin or --organisation-code-stdin")
        return EXIT_USAGE
    if args.recovery_code_stdin or args.organisation_code_stdin:
        code = read_code_from_stdin()
        if code is None:
            return EXIT_USAGE
        try:
            parse_code(code)  # a typo is told before anything is downloaded
        except InvalidRecoveryCode as exc:
            err(f"restore failed: {exc}")
            return EXIT_USAGE
    live = not args.json and sys.stderr.isatty()
    display = RestoreDisplay(live)
    cancel = CancelToken()
    if args.organisation_code_stdin:
        assert code is not None
        return organisation_restore(args, settings, code, display, cancel)
    with connect(settings) as client:
        info = lookup(client, args.backup_id)
        options = _options(args, info)
        incremental = info is not None and info.type == "incremental"
        with signal_handlers(cancel_on_signals(cancel)):
            try:
                if incremental:
                    if args.list:
                        err("list a snapshot's files with `backapp-agent ls BACKUP_ID`")
                        return EXIT_FAILED
                    with Snapshots.from_settings(
                        settings, load_key(settings), recovery_code=code
                    ) as snaps:
                        result = snaps.restore(
                            args.backup_id,
                            options,
                            events=JsonLines(sys.stdout) if args.json else display,
                            cancel=cancel,
                            agent_id=info.agent_id if info is not None else None,
                        )
                    display.close()
                    return _restore_summary(args, result)
                recovery = Recovery(
                    client, RepoKeyStore(config_dir()), server_url=settings.server_url or ""
                )
                maker = info.agent_id if info is not None else None
                result = _restore_archive(
                    client,
                    args,
                    options,
                    settings,
                    events=JsonLines(sys.stdout) if args.json else display,
                    cancel=cancel,
                    identities=lambda _ticket: recovery.archive_identities(maker, code),
                )
            except BackupCancelled as exc:
                display.close()
                err(f"restore {exc.reason}; nothing was restored")
                return EXIT_INTERRUPTED
            except RepositoryKeyMissing as exc:
                display.close()
                err(f"{exc} (nothing was restored)")
                return EXIT_FAILED
            except (RestoreError, AgentError) as exc:
                display.close()
                if args.list:
                    err("the listing above is NOT trustworthy")
                err(f"restore failed: {exc}")
                return EXIT_FAILED
    display.close()
    return _restore_summary(args, result)


def _restore_archive(
    source: RestoreSource,
    args: argparse.Namespace,
    options: RestoreOptions,
    settings: AgentSettings,
    *,
    events: EventSink,
    cancel: CancelToken,
    identities: Callable[[RestoreTicket], Sequence[Any]],
) -> RestoreResult:
    """Restore a full archive from ``source``, opening it with ``identities`` when encrypted;
    ``--list`` prints each member as it is written."""
    with Restorer(
        source,
        events=events,
        temp_dir=settings.temp_dir,
        download_limit=agent_bandwidth(settings).download,
        identities=identities,
    ) as restorer:
        return restorer.restore(
            args.backup_id,
            options,
            cancel=cancel,
            on_member=(lambda m: print(_list_line(m))) if args.list and not args.json else None,
        )


def _restore_summary(args: argparse.Namespace, result: RestoreResult) -> int:
    status = EXIT_OK
    if result.unmatched_patterns:
        err("no member matched: " + ", ".join(repr(p) for p in result.unmatched_patterns))
        status = EXIT_FILE_ERRORS
    if result.skipped:
        status = EXIT_FILE_ERRORS
    if result.restored == 0 and args.patterns:
        status = EXIT_FAILED
    if args.json:
        return status
    if result.restored == 0 and args.patterns:
        print("Nothing matched the --path patterns; nothing was restored.")
        return status
    verb = "Listed" if args.list else "Restored"
    where = "" if args.list else f" into {result.target}"
    resumed = f", download resumed {result.resumed}x" if result.resumed else ""
    print(
        printable(
            f"{verb} {result.files:,} files, {result.dirs:,} folders, {result.links:,} links "
            f"({human_bytes(result.bytes)}){where} in {result.duration_ms / 1000:.1f} s; "
            f"{len(result.skipped)} skipped{resumed}."
        )
    )
    if result.sha256:
        print(
            f"Verified {result.filename}: {result.archive_size:,} bytes, SHA-256 {result.sha256}."
        )
    else:
        print(
            f"Checked every chunk of {result.filename} against its id: "
            f"{human_bytes(result.archive_size)} downloaded from {result.packs:,} pack(s)."
        )
    if result.unchanged:
        print(f"{result.unchanged:,} file(s) were already there with the same content.")
    if result.renamed:
        print(f"Kept {len(result.renamed)} existing file(s) that differ; restored beside them:")
        for path, name in result.renamed:  # every one: the user has to find them
            print(printable(f"  {path!r} -> {name!r}"))
    if result.replaced:
        print(f"Replaced {len(result.replaced)} existing file(s) (--overwrite):")
        for path in result.replaced:
            print(printable(f"  {path!r}"))
    if result.skipped:
        print(f"Skipped ({len(result.skipped)}):")
        for path, reason in result.skipped[:MAX_SKIPS_SHOWN]:
            print(printable(f"  {path!r}: {reason}"))
        if len(result.skipped) > MAX_SKIPS_SHOWN:
            print(f"  ... and {len(result.skipped) - MAX_SKIPS_SHOWN} more")
    return status


class _OrganisationSource:
    """The restore source of an administrator restoring with the organisation code: a signed GET
    of any encrypted archive of the server (the server hands out ciphertext only)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def list_backups(self, *, config_id: str | None = None, limit: int = 100) -> list[BackupInfo]:
        return []

    def restore_ticket(self, backup_id: str) -> RestoreTicket:
        return self.client.organisation_restore_ticket(backup_id)


def organisation_restore(
    args: argparse.Namespace,
    settings: AgentSettings,
    code: str,
    display: RestoreDisplay,
    cancel: CancelToken,
) -> int:
    """``restore --organisation-code-stdin``: an administrator restores a snapshot or an encrypted
    archive of any machine of the server with the organisation's code (checked before anything
    is downloaded). A snapshot is tried first: the server answers 404 for anything else."""
    options = _options(args, None)
    events = JsonLines(sys.stdout) if args.json else display
    with signal_handlers(cancel_on_signals(cancel)):
        try:
            with OrganisationSnapshots.connect(settings, load_key(settings), code) as snaps:
                try:
                    found = snaps.open(args.backup_id)
                except NotFoundError:
                    found = None
                if found is not None:
                    if args.list:
                        err(
                            "list a snapshot's files with `backapp-agent ls BACKUP_ID "
                            "--organisation-code-stdin`"
                        )
                        return EXIT_FAILED
                    if not args.json:
                        print(
                            printable(
                                f"Restoring a snapshot of “{found.agent_name}” "
                                f"({found.config_name}) with the organisation code; the owner "
                                "sees this in that machine's log."
                            )
                        )
                    result = snaps.restore(
                        args.backup_id,
                        options,
                        events=events,
                        cancel=cancel,
                        agent_id=found.agent_id,
                    )
                else:
                    identity = snaps.identity().age_identity()
                    result = _restore_archive(
                        _OrganisationSource(snaps.client),
                        args,
                        options,
                        settings,
                        events=events,
                        cancel=cancel,
                        identities=lambda _ticket: [identity],
                    )
        except BackupCancelled as exc:
            display.close()
            err(f"restore {exc.reason}; nothing was restored")
            return EXIT_INTERRUPTED
        except NotFoundError:
            display.close()
            err(
                f"restore failed: no encrypted archive or snapshot {args.backup_id} that an "
                "administrator may restore with the organisation code (this machine must be an "
                "administrator's, and plain archives stay with their owners)"
            )
            return EXIT_FAILED
        except (RestoreError, AgentError) as exc:
            display.close()
            err(f"restore failed: {exc}")
            return EXIT_FAILED
    display.close()
    return _restore_summary(args, result)
