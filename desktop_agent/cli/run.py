"""``backapp-agent run`` (back up the assigned configs once) and ``backapp-agent daemon`` (stay
running: schedules, Back Up Now from the web)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from desktop_agent import __version__
from desktop_agent.engine import (
    AgentDaemon,
    AgentSocket,
    CancelToken,
    CompactDuty,
    ConfigurationError,
    Dispatcher,
    DrillDuty,
    RestoreJobs,
    Runner,
    RunResult,
    Scheduler,
    ScheduleStore,
    StateStore,
    UpdateDuty,
    Updater,
    config_dir,
    engine_restore,
    instances_dir,
    load_settings,
    local_timezone_name,
    printable,
)

from .common import (
    EXIT_FAILED,
    EXIT_FILE_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    cancel_on_signals,
    err,
    load_key,
    log,
    signal_handlers,
    verbosity,
)
from .display import LiveProgress, daemon_display, make_display


def exit_status(result: RunResult) -> int:
    """1 if a backup failed or the run could not start, 130 if it was cancelled (Ctrl-C, SIGTERM)
    and nothing failed, 3 if some files could not be read, else 0."""
    if result.cancelled:
        return EXIT_INTERRUPTED
    if not result.ok:
        return EXIT_FAILED
    return EXIT_FILE_ERRORS if result.has_file_errors else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Back up the assigned configs (or ``--config`` ones) once, each under its lease."""
    settings = load_settings()
    key = load_key(settings)
    # A one-shot run does not install updates (the daemon and `update` do), but it is a start:
    # a fresh update past its deadline is rolled back, and its heartbeat can confirm one.
    updater = Updater(config_dir())
    if updater.startup():
        updater.restart()
    display = make_display(args.json)
    cancel = CancelToken()
    try:
        # Each config through the runner: its lease on the server first, so a config that another
        # process or machine is running is skipped, never run twice at once.
        with (
            signal_handlers(cancel_on_signals(cancel)),
            # One-shot: the server then expects silence until the next scheduled run, not a
            # heartbeat every pollInterval (cron runs this, nothing keeps running).
            Runner.from_settings(
                settings, key, events=display, instance_dir=instances_dir(), mode="oneshot"
            ) as runner,
        ):
            result = runner.run_manual(config_ids=args.config_ids, cancel=cancel)
    finally:
        if isinstance(display, LiveProgress):
            display.close()
    try:
        StateStore(config_dir()).record(result)
    except OSError as exc:
        log.warning("could not save the local state: %s", exc)
    if not result.error:
        updater.confirm()  # the run started: its heartbeat was answered
    if result.error:
        err(f"the run could not start: {result.error}")
    elif not args.json and not result.results and not result.skipped:
        print("No backup configs are assigned to this agent.")
    for skip in result.skipped:
        err(printable(f"'{skip.title}' was not backed up: {skip.reason}"))
    return exit_status(result)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run until SIGTERM or Ctrl-C: heartbeats, the WebSocket, the schedules, up to
    ``parallelBackups`` backups (of different configs) at a time."""
    settings = load_settings()
    key = load_key(settings)
    assert settings.server_url
    if args.tick <= 0:
        raise ConfigurationError("--tick must be a positive number of seconds")
    if verbosity(args) == 0:  # a daemon's log is its only voice: say what it does
        for name in ("desktop_agent", "backapp-agent"):
            logging.getLogger(name).setLevel(logging.INFO)
    zone = local_timezone_name()
    if zone is None:
        log.warning("cannot tell this machine's time zone: schedules run in UTC")
    updater = Updater(config_dir())
    if updater.startup():  # this build is an update that missed its deadline: back to the old
        updater.restart()
    display = daemon_display(args.json)
    runner = Runner.from_settings(
        settings,
        key,
        events=display,
        mode="daemon",
        state=StateStore(config_dir()),
        instance_dir=instances_dir(),
    )
    scheduler = Scheduler(ScheduleStore(config_dir()), zone)
    service = AgentDaemon(
        runner.plane,
        runner,
        Dispatcher(scheduler, parallel=settings.parallel_backups),
        version=__version__,
        platform=sys.platform,
        poll_interval=settings.poll_interval_ms / 1000,
        tick=args.tick,
        # Restores asked for from the web console, through the same engine path as `restore`.
        restores=RestoreJobs(
            runner.plane, engine_restore(settings, key, runner.plane), events=display
        ),
        drills=DrillDuty(settings, key, config_dir()),
        compactions=CompactDuty(settings, key),
        updates=UpdateDuty(updater, enabled=settings.auto_update),
    )
    if not args.no_socket:
        service.socket = runner.socket = AgentSocket(
            settings.server_url,
            key,
            on_run=service.on_run_request,
            on_restore=service.on_restore_request,
            user_agent=f"backapp-agent/{__version__}",
        )

    def handler(signum: int, frame: FrameType | None) -> None:
        if service.stopping:
            raise KeyboardInterrupt
        print("backapp-agent: stopping (press Ctrl-C again to quit at once)...", file=sys.stderr)
        service.stop("agent stopped" if signum != signal.SIGINT else "cancelled by the user")

    try:
        with signal_handlers(handler):
            log.info(
                "daemon started: server %s, time zone %s, socket %s, parallel backups %d",
                settings.server_url,
                zone or "UTC",
                "off" if args.no_socket else "on",
                settings.parallel_backups,
            )
            service.run()
    finally:
        runner.close()
    if service.restart:
        log.info("daemon restarting as the new build")
        updater.restart()
    log.info("daemon stopped")
    return EXIT_OK
