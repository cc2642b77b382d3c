"""``backapp-agent``: the headless agent.

    backapp-agent configure --server URL [--api-key-stdin] [--agent-id ID] [--poll-interval S]
                            [--temp-dir DIR] [--no-verify]
    backapp-agent run [--config ID ...] [--json]
    backapp-agent daemon [--json] [--no-socket] [--tick SECONDS]
    backapp-agent status [--json]
    backapp-agent backups [--config ID] [--json]
    backapp-agent restore BACKUP_ID [--to DIR | --in-place] [--path PATTERN ...] [--list]
                          [--overwrite] [--json]
    backapp-agent --version

Exit status: 0 all went well; 1 a backup or restore failed (or the run could not start, or a config
was not started because another process or machine is running it); 2 bad usage or configuration;
3 every backup completed but some files could not be read (as restic does), or a restore completed
but skipped members; 130 interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import shutil
import signal
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from desktop_agent import __version__
from desktop_agent._terminal import LiveProgress, human_bytes, human_duration, make_display
from desktop_agent.engine import (
    AgentDaemon,
    AgentError,
    AgentSettings,
    AgentSocket,
    ApiClient,
    AuthenticationError,
    BackupCancelled,
    BackupEngine,
    CancelToken,
    ConfigurationError,
    ControlPlane,
    Dispatcher,
    EngineOptions,
    Event,
    EventSink,
    HttpStorage,
    KeyStore,
    KeyStoreError,
    MemberInfo,
    NetworkError,
    RestoreError,
    RestoreFailed,
    RestoreOptions,
    RestoreProgress,
    Restorer,
    RestoreResult,
    RestoreSkipped,
    RetryPolicy,
    Runner,
    RunResult,
    Scheduler,
    ScheduleStore,
    StateStore,
    config_dir,
    default_target_name,
    event_to_json,
    install_log_redaction,
    load_settings,
    local_timezone_name,
    printable,
    save_settings,
)
from desktop_agent.engine.schedule import ScheduleError, parse_stored_schedule, resolve_timezone

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FILE_ERRORS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("backapp-agent")


class _RejectKeyArgument(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "the API key is never taken from the command line (it would land in your shell history "
            "and in `ps`): leave it out to be prompted, or pipe it in with --api-key-stdin"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backapp-agent",
        description="BackApp agent: backs up this machine's folders straight to S3.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"backapp-agent {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    configure = sub.add_parser(
        "configure",
        help="set the server and the API key",
        description="Store the server URL and settings, and the API key in the OS keychain.",
        allow_abbrev=False,
    )
    configure.add_argument(
        "--server", metavar="URL", help="the BackApp server, e.g. https://backapp.example.org"
    )
    configure.add_argument(
        "--api-key-stdin", action="store_true", help="read the API key from standard input"
    )
    configure.add_argument(
        "--api-key", nargs="?", action=_RejectKeyArgument, help=argparse.SUPPRESS
    )
    configure.add_argument(
        "--agent-id", metavar="ID", help="this agent's id (shown at registration)"
    )
    configure.add_argument(
        "--poll-interval", metavar="SECONDS", type=float, help="seconds between polls (default 30)"
    )
    configure.add_argument(
        "--temp-dir", metavar="DIR", type=Path, help="scratch folder for the scan list"
    )
    configure.add_argument(
        "--no-verify", action="store_true", help="save without checking the key with a heartbeat"
    )
    configure.set_defaults(func=cmd_configure)

    run = sub.add_parser(
        "run",
        help="back up the assigned configs once",
        description="Heartbeat, fetch the assigned configs, back each one up, heartbeat.",
        allow_abbrev=False,
    )
    run.add_argument(
        "--config",
        metavar="ID",
        action="append",
        dest="config_ids",
        help="only this config (repeatable)",
    )
    run.add_argument("--json", action="store_true", help="print progress events as JSON lines")
    run.set_defaults(func=cmd_run)

    daemon = sub.add_parser(
        "daemon",
        help="run in the background: scheduled backups, Back Up Now from the web",
        description="Stay running until SIGTERM or Ctrl-C: heartbeat every pollInterval, keep a "
        "WebSocket open to the server for Back Up Now, run each config when its schedule is due "
        "(in this machine's time zone), retry failed scheduled backups. One backup at a time.",
        allow_abbrev=False,
    )
    daemon.add_argument("--json", action="store_true", help="print progress events as JSON lines")
    daemon.add_argument(
        "--no-socket",
        action="store_true",
        help="do not open the WebSocket (Back Up Now then arrives with the next heartbeat)",
    )
    daemon.add_argument(
        "--tick",
        metavar="SECONDS",
        type=float,
        default=15.0,
        help="seconds between schedule checks (default 15)",
    )
    daemon.set_defaults(func=cmd_daemon)

    status = sub.add_parser(
        "status",
        help="show the connection, the assigned configs and their last results",
        allow_abbrev=False,
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=cmd_status)

    backups = sub.add_parser(
        "backups",
        help="list the backups this agent can restore",
        description="The completed backups of the configs assigned to this agent, newest first.",
        allow_abbrev=False,
    )
    backups.add_argument("--config", metavar="ID", dest="config_id", help="only this config")
    backups.add_argument(
        "--limit", metavar="N", type=int, default=100, help="at most N backups (default 100)"
    )
    backups.add_argument("--json", action="store_true", help="print one JSON object")
    backups.set_defaults(func=cmd_backups)

    restore = sub.add_parser(
        "restore",
        help="download, verify and extract a backup",
        description="Download a backup, verify its size and SHA-256, and extract it into a new "
        "folder (default: ./backapp-restore-<config>-<date>), never over the originals unless "
        "--in-place is given.",
        allow_abbrev=False,
    )
    restore.add_argument("backup_id", metavar="BACKUP_ID", help="the backup (see `backups`)")
    where = restore.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="DIR", type=Path, help="restore into this folder")
    where.add_argument(
        "--in-place",
        action="store_true",
        help="restore to the original paths (existing newer files are kept)",
    )
    where.add_argument(
        "--list", action="store_true", help="list the archive's members, extract nothing"
    )
    restore.add_argument(
        "--path",
        metavar="PATTERN",
        action="append",
        dest="patterns",
        default=[],
        help="only members matching PATTERN (repeatable; `*.pdf`, `/home/me/Documents`, `a/**/b`)",
    )
    restore.add_argument(
        "--overwrite", action="store_true", help="replace existing files even when they are newer"
    )
    restore.add_argument("--json", action="store_true", help="print progress events as JSON lines")
    restore.set_defaults(func=cmd_restore)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    install_log_redaction()
    if verbosity < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)


def _account(server_url: str) -> str:
    return server_url.rstrip("/")


def _err(message: str) -> None:
    print(f"backapp-agent: {message}", file=sys.stderr)


# -- configure ---------------------------------------------------------------------------------------


def _read_key(args: argparse.Namespace, server: str) -> str:
    if args.api_key_stdin:
        return sys.stdin.readline().strip()
    if not sys.stdin.isatty():
        raise ConfigurationError(
            "no terminal to prompt for the API key: pipe it in with --api-key-stdin"
        )
    return getpass.getpass(
        f"API key for {server} (input hidden; empty keeps the stored key): "
    ).strip()


def cmd_configure(args: argparse.Namespace) -> int:
    directory = config_dir()
    try:
        current = load_settings()
    except ConfigurationError as exc:
        _err(f"{exc}; starting from default settings")
        current = AgentSettings()
    server = (args.server or current.server_url or "").rstrip("/")
    if not server:
        raise ConfigurationError("--server URL is required the first time")
    settings = replace(current, server_url=server)
    if args.agent_id:
        settings = replace(settings, agent_id=args.agent_id)
    if args.poll_interval is not None:
        settings = replace(settings, poll_interval_ms=int(args.poll_interval * 1000))
    if args.temp_dir is not None:
        settings = replace(settings, temp_dir=args.temp_dir.expanduser().absolute())
    settings = settings.validated()

    store = KeyStore(directory)
    key = _read_key(args, server)
    if not key:
        stored = store.load(_account(server)) or (
            store.load(_account(current.server_url)) if current.server_url else None
        )
        if stored is None:
            raise ConfigurationError("no API key given and none stored")
        key = stored[0]

    if not args.no_verify:
        try:
            with ApiClient(server, key, retry=RetryPolicy(max_attempts=2)) as client:
                client.heartbeat(version=__version__, platform=sys.platform)
        except AuthenticationError:
            _err(f"the server at {server} refused this API key; nothing was saved")
            return EXIT_FAILED
        except AgentError as exc:
            _err(f"{exc}\nnothing was saved (use --no-verify to save anyway)")
            return EXIT_FAILED

    path = save_settings(settings)
    if current.server_url and _account(current.server_url) != _account(server):
        store.delete(_account(current.server_url))
    location = store.save(_account(server), key)
    print(f"Server:   {server}" + ("" if args.no_verify else " (the key works)"))
    print(f"Settings: {path}")
    print(f"API key:  in {location.describe()}")
    if location.kind == "file":
        _err(
            f"warning: no usable OS keychain here, so the API key is stored in {location.detail} "
            "(readable only by you, mode 0600). Anyone with access to your account or root can read it."
        )
    return EXIT_OK


# -- run ---------------------------------------------------------------------------------------------


def _load_key(settings: AgentSettings) -> str:
    if not settings.server_url:
        raise ConfigurationError("not configured: run `backapp-agent configure --server URL` first")
    found = KeyStore(config_dir()).load(_account(settings.server_url))
    if found is None:
        raise ConfigurationError("no API key stored: run `backapp-agent configure` first")
    return found[0]


def _install_cancel_handlers(cancel: CancelToken) -> dict[int, Any]:
    """First Ctrl-C (or SIGTERM): cancel cleanly (abort the upload, mark the log failed); second:
    quit at once. Returns the previous handlers, to restore."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.cancel("cancelled by the user" if signum == signal.SIGINT else "agent terminated")
        print("\nbackapp-agent: stopping (press Ctrl-C again to quit at once)...", file=sys.stderr)

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)
    return previous


def exit_status(result: RunResult) -> int:
    if not result.ok:
        return EXIT_FAILED
    return EXIT_FILE_ERRORS if result.has_file_errors else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    key = _load_key(settings)
    display = make_display(args.json)
    cancel = CancelToken()
    previous = _install_cancel_handlers(cancel)
    try:
        # Each config through the runner: its lease on the server first, so a config that another
        # process or machine is running is skipped, never run twice at once.
        with Runner.from_settings(settings, key, events=display) as runner:
            result = runner.run_manual(config_ids=args.config_ids, cancel=cancel)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if isinstance(display, LiveProgress):
            display.close()
    try:
        StateStore(config_dir()).record(result)
    except OSError as exc:
        log.warning("could not save the local state: %s", exc)
    if result.error:
        _err(f"the run could not start: {result.error}")
    elif not args.json and not result.results and not result.skipped:
        print("No backup configs are assigned to this agent.")
    for skip in result.skipped:
        _err(printable(f"'{skip.title}' was not backed up: {skip.reason}"))
    return exit_status(result)


# -- daemon ------------------------------------------------------------------------------------------


def _daemon_display(as_json: bool) -> EventSink:
    """``--json``: every event as a JSON line; else one line per finished or failed backup."""
    if as_json:
        return _json_events

    def lines(event: Event) -> None:
        data = event_to_json(event)
        if event.kind == "backup_finished":
            print(
                printable(
                    f"{data['time']} completed '{data['configName'] or data['configId']}': "
                    f"{data['filename']} ({data['files']} files, {human_bytes(data['archiveSize'])})"
                ),
                flush=True,
            )
        elif event.kind == "backup_failed":
            print(
                printable(
                    f"{data['time']} FAILED '{data['configName'] or data['configId']}': "
                    f"{data['reason']}"
                ),
                flush=True,
            )

    return lines


def cmd_daemon(args: argparse.Namespace) -> int:
    settings = load_settings()
    key = _load_key(settings)
    assert settings.server_url
    if args.tick <= 0:
        raise ConfigurationError("--tick must be a positive number of seconds")
    if args.verbose == 0:  # a daemon's log is its only voice: say what it does
        for name in ("desktop_agent", "backapp-agent"):
            logging.getLogger(name).setLevel(logging.INFO)
    zone = local_timezone_name()
    if zone is None:
        log.warning("cannot tell this machine's time zone: schedules run in UTC")
    user_agent = f"backapp-agent/{__version__}"
    plane = ApiClient(settings.server_url, key, user_agent=user_agent)
    storage = HttpStorage(user_agent=user_agent)
    options = EngineOptions.from_settings(settings)
    display = _daemon_display(args.json)

    def make_engine(control: ControlPlane, events: EventSink) -> BackupEngine:
        return BackupEngine(control, storage, options, events=events)

    runner = Runner(plane, make_engine, events=display, state=StateStore(config_dir()))
    scheduler = Scheduler(ScheduleStore(config_dir()), zone)
    service = AgentDaemon(
        plane,
        runner,
        Dispatcher(scheduler),
        version=__version__,
        platform=sys.platform,
        poll_interval=settings.poll_interval_ms / 1000,
        tick=args.tick,
    )
    if not args.no_socket:
        service.socket = runner.socket = AgentSocket(
            settings.server_url, key, on_run=service.on_run_request, user_agent=user_agent
        )

    def handler(signum: int, frame: FrameType | None) -> None:
        if service.stopping:
            raise KeyboardInterrupt
        print("backapp-agent: stopping (press Ctrl-C again to quit at once)...", file=sys.stderr)
        service.stop("agent stopped" if signum != signal.SIGINT else "cancelled by the user")

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)
    log.info(
        "daemon started: server %s, time zone %s, socket %s",
        settings.server_url,
        zone or "UTC",
        "off" if args.no_socket else "on",
    )
    try:
        service.run()
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        plane.close()
        storage.close()
    log.info("daemon stopped")
    return EXIT_OK


def _schedule_report(
    config: Any, saved: dict[str, dict[str, Any]], zone: str | None
) -> dict[str, Any]:
    """``schedule``, ``nextRun`` and ``lastScheduledRun`` of one config, for ``status``."""
    try:
        schedule = parse_stored_schedule(config.options.schedule)
    except ScheduleError as exc:
        return {"schedule": None, "scheduleError": str(exc), "nextRun": None}
    if schedule is None:
        return {"schedule": None, "nextRun": None}
    from datetime import UTC, datetime

    tz = resolve_timezone(zone)
    when = schedule.next_after(datetime.now(UTC), tz)
    return {
        "schedule": schedule.describe(),
        "cron": schedule.cron,
        "nextRun": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "nextRunLocal": when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z"),
        "lastScheduledRun": saved.get(config.id, {}).get("lastRun"),
    }


# -- status ------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    directory = config_dir()
    settings = load_settings()
    report: dict[str, Any] = {
        "version": __version__,
        "configDir": str(directory),
        "serverUrl": settings.server_url,
        "agentId": settings.agent_id,
        "apiKey": None,
        "connection": None,
        "configs": [],
        "lastRun": None,
        "timezone": local_timezone_name(),
    }
    saved_schedules = ScheduleStore(directory).load()
    state = StateStore(directory).load()
    report["lastRun"] = state.get("lastRun")
    status = EXIT_OK
    configs: list[dict[str, Any]] = []
    try:
        key = _load_key(settings)
        found = KeyStore(directory).load(_account(settings.server_url or ""))
        report["apiKey"] = found[1].describe() if found else None
        assert settings.server_url
        with ApiClient(settings.server_url, key, retry=RetryPolicy(max_attempts=2)) as client:
            beat = client.heartbeat(version=__version__, platform=sys.platform)
            report["connection"] = {"ok": True, "status": beat.status}
            for assigned in client.list_configs():
                configs.append(
                    {
                        "id": assigned.id,
                        "name": assigned.name,
                        "sources": [s.path for s in assigned.sources],
                        "lastResult": state["configs"].get(assigned.id),
                        **_schedule_report(assigned, saved_schedules, report["timezone"]),
                    }
                )
    except (AgentError, KeyStoreError) as exc:
        report["connection"] = {"ok": False, "error": str(exc)}
        configs = [{"id": cid, "lastResult": r} for cid, r in state["configs"].items()]
        status = EXIT_FAILED
    report["configs"] = configs
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return status
    print(f"backapp-agent {__version__}")
    print(f"Settings:   {directory}")
    print(f"Server:     {settings.server_url or '(not configured)'}")
    if settings.agent_id:
        print(f"Agent id:   {settings.agent_id}")
    if report["apiKey"]:
        print(f"API key:    in {report['apiKey']}")
    conn = report["connection"]
    print(
        f"Connection: {'online' if conn and conn['ok'] else 'FAILED: ' + (conn or {}).get('error', '')}"
    )
    print(f"Last run:   {report['lastRun'] or 'never'}")
    print(f"Configs:    {len(configs)}")
    for c in configs:
        last = c.get("lastResult")
        if last is None:
            outcome = "never backed up by this agent"
        elif last["status"] == "completed":
            errs = f", {last['errorCount']} file errors" if last.get("errorCount") else ""
            outcome = (
                f"completed {last['finishedAt']}: {last['filename']} ({last['size']} bytes{errs})"
            )
        else:
            outcome = f"FAILED {last.get('finishedAt') or ''}: {last.get('error')}"
        print(f"  - {c.get('name') or c['id']} [{c['id']}]")
        if c.get("sources"):
            print(f"      sources: {', '.join(c['sources'])}")
        if c.get("schedule"):
            print(f"      schedule: {c['schedule']} ({report['timezone'] or 'UTC'})")
            print(f"      next:    {c['nextRunLocal']}")
        elif c.get("scheduleError"):
            print(f"      schedule: ignored: {c['scheduleError']}")
        elif "schedule" in c:
            print("      schedule: none (runs when asked)")
        print(f"      last:    {outcome}")
    return status


# -- backups and restore -----------------------------------------------------------------------------


def _client(settings: AgentSettings) -> ApiClient:
    key = _load_key(settings)
    assert settings.server_url
    return ApiClient(settings.server_url, key)


def cmd_backups(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _client(settings) as client:
        found = client.list_backups(config_id=args.config_id, limit=args.limit)
    if args.json:
        rows = [
            {
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
            }
            for b in found
        ]
        print(json.dumps({"backups": rows}, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not found:
        print("No backups to restore.")
        return EXIT_OK
    print(f"{'ID':36}  {'DATE (UTC)':19}  {'SIZE':>10}  {'FILES':>8}  {'STATUS':9}  CONFIG")
    for b in found:
        when = (b.completed_at or b.started_at or "").replace("T", " ")[:19]
        size = human_bytes(b.size) if b.size is not None else "?"
        files = f"{b.files_processed:,}" if b.files_processed is not None else "?"
        print(
            printable(
                f"{b.id:36}  {when:19}  {size:>10}  {files:>8}  {b.status:9}  "
                f"{b.config_name or b.config_id}  {b.filename}"
            )
        )
    return EXIT_OK


MAX_SKIPS_SHOWN = 50


class _RestoreDisplay:
    """A live status line on a terminal (stderr), the skipped members, nothing else."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.skips = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, RestoreProgress):
            if self.live:
                pct = f"{100 * event.bytes_downloaded / event.size:5.1f}%  " if event.size else ""
                line = (
                    f"restore: {pct}{human_bytes(event.bytes_downloaded)}/"
                    f"{human_bytes(event.size)}  {event.files:,} items  "
                    f"{human_bytes(event.rate)}/s  ETA {human_duration(event.eta)}"
                )
                width = shutil.get_terminal_size((100, 20)).columns - 1
                sys.stderr.write("\r\x1b[K" + line[:width])
                sys.stderr.flush()
        elif isinstance(event, RestoreSkipped) and self.live:  # else the summary lists them
            self.skips += 1
            if self.skips <= MAX_SKIPS_SHOWN:
                self._line(f"skipped {event.path!r}: {event.reason}")
            elif self.skips == MAX_SKIPS_SHOWN + 1:
                self._line("more members were skipped (see the summary)")
        elif isinstance(event, RestoreFailed):
            self.close()

    def _line(self, text: str) -> None:
        if self.live:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.write(printable(text) + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _json_events(event: Event) -> None:
    sys.stdout.write(json.dumps(event_to_json(event)) + "\n")
    sys.stdout.flush()


def _default_target(client: ApiClient, backup_id: str) -> Path:
    """./backapp-restore-<config>-<date>, with -2, -3... if that exists."""
    config_name, filename = "", backup_id
    for b in client.list_backups(limit=1000):
        if b.id == backup_id:
            config_name, filename = b.config_name or b.config_id[:8], b.filename
            break
    base = Path.cwd() / default_target_name(config_name, filename)
    target, n = base, 1
    while target.exists() or target.is_symlink():
        n += 1
        target = base.with_name(f"{base.name}-{n}")
    return target


def _list_line(m: MemberInfo) -> str:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(m.mtime, UTC).strftime("%Y-%m-%d %H:%M")
    mode = stat.filemode(
        m.mode | {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(m.kind, stat.S_IFREG)
    )
    arrow = f" -> {m.linkname}" if m.kind == "symlink" else ""
    arrow = f" link to {m.linkname}" if m.kind == "hardlink" else arrow
    return printable(f"{mode} {m.size:>12} {when}  {m.name}{arrow}")


def cmd_restore(args: argparse.Namespace) -> int:
    settings = load_settings()
    live = not args.json and sys.stderr.isatty()
    display = _RestoreDisplay(live)
    cancel = CancelToken()
    with _client(settings) as client:
        target: Path | None = None
        if args.to is not None:
            target = args.to.expanduser().absolute()
        elif not args.in_place and not args.list:
            target = _default_target(client, args.backup_id)
        options = RestoreOptions(
            target=target,
            in_place=args.in_place,
            overwrite=args.overwrite,
            patterns=tuple(args.patterns),
            list_only=args.list,
        )
        previous = _install_cancel_handlers(cancel)
        try:
            with Restorer(
                client, events=_json_events if args.json else display, temp_dir=settings.temp_dir
            ) as restorer:
                result = restorer.restore(
                    args.backup_id,
                    options,
                    cancel=cancel,
                    on_member=(lambda m: print(_list_line(m)))
                    if args.list and not args.json
                    else None,
                )
        except BackupCancelled as exc:
            display.close()
            _err(f"restore {exc.reason}; nothing was restored")
            return EXIT_INTERRUPTED
        except (RestoreError, AgentError) as exc:
            display.close()
            if args.list:
                _err("the listing above is NOT trustworthy")
            _err(f"restore failed: {exc}")
            return EXIT_FAILED
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
    display.close()
    return _restore_summary(args, result)


def _restore_summary(args: argparse.Namespace, result: RestoreResult) -> int:
    status = EXIT_OK
    if result.unmatched_patterns:
        _err("no member matched: " + ", ".join(repr(p) for p in result.unmatched_patterns))
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
    print(f"Verified {result.filename}: {result.archive_size:,} bytes, SHA-256 {result.sha256}.")
    if result.skipped:
        print(f"Skipped ({len(result.skipped)}):")
        for path, reason in result.skipped[:MAX_SKIPS_SHOWN]:
            print(printable(f"  {path!r}: {reason}"))
        if len(result.skipped) > MAX_SKIPS_SHOWN:
            print(f"  ... and {len(result.skipped) - MAX_SKIPS_SHOWN} more")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        result: int = args.func(args)
        return result
    except (ConfigurationError, KeyStoreError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except NetworkError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except AgentError as exc:  # e.g. the server refused the key or does not know the backup
        _err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
