"""``backapp-agent configure``: the server, the settings, and the API key in the OS keychain."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from desktop_agent import __version__
from desktop_agent.engine import (
    MAX_PARALLEL_BACKUPS,
    AgentError,
    AgentSettings,
    ApiClient,
    AuthenticationError,
    ConfigurationError,
    KeyStore,
    RetryPolicy,
    config_dir,
    load_settings,
    save_settings,
)

from .common import EXIT_FAILED, EXIT_OK, Commands, account, add_command, err


class _RejectKeyArgument(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "the API key is never taken from the command line (it would land in your shell history "
            "and in `ps`): leave it out to be prompted, or pipe it in with --api-key-stdin"
        )


def register(commands: Commands) -> None:
    """Add ``configure``."""
    configure = add_command(
        commands,
        "configure",
        cmd_configure,
        help="set the server and the API key",
        description="Store the server URL and settings, and the API key in the OS keychain.",
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
    for direction, what in (("upload", "backups"), ("download", "restores")):
        configure.add_argument(
            f"--limit-{direction}",
            metavar="MBIT",
            type=_limit,
            help=f"limit {what} to MBIT Mbit/s in all (0 removes the limit)",
        )
    configure.add_argument(
        "--parallel-backups",
        metavar="N",
        type=_parallel,
        help=f"back up to N different configs at the same time (1-{MAX_PARALLEL_BACKUPS}, "
        "default 1)",
    )
    configure.add_argument(
        "--no-verify", action="store_true", help="save without checking the key with a heartbeat"
    )


def _limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of Mbit/s: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("a limit is a number of Mbit/s, 0 for none")
    return value


def _parallel(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_PARALLEL_BACKUPS:
        raise argparse.ArgumentTypeError(
            f"parallel backups must be between 1 and {MAX_PARALLEL_BACKUPS}, not {value}"
        )
    return value


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
    """Check the key with a heartbeat (unless ``--no-verify``), then save settings and key."""
    directory = config_dir()
    try:
        current = load_settings()
    except ConfigurationError as exc:
        err(f"{exc}; starting from default settings")
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
    if args.limit_upload is not None:
        settings = replace(settings, limit_upload=args.limit_upload or None)
    if args.limit_download is not None:
        settings = replace(settings, limit_download=args.limit_download or None)
    if args.parallel_backups is not None:
        settings = replace(settings, parallel_backups=args.parallel_backups)
    settings = settings.validated()

    store = KeyStore(directory)
    key = _read_key(args, server)
    if not key:
        stored = store.load(account(server)) or (
            store.load(account(current.server_url)) if current.server_url else None
        )
        if stored is None:
            raise ConfigurationError("no API key given and none stored")
        key = stored[0]

    if not args.no_verify:
        try:
            with ApiClient(server, key, retry=RetryPolicy(max_attempts=2)) as client:
                client.heartbeat(version=__version__, platform=sys.platform)
        except AuthenticationError:
            err(f"the server at {server} refused this API key; nothing was saved")
            return EXIT_FAILED
        except AgentError as exc:
            err(f"{exc}\nnothing was saved (use --no-verify to save anyway)")
            return EXIT_FAILED

    path = save_settings(settings)
    if current.server_url and account(current.server_url) != account(server):
        store.delete(account(current.server_url))
    location = store.save(account(server), key)
    print(f"Server:   {server}" + ("" if args.no_verify else " (the key works)"))
    print(f"Settings: {path}")
    print(f"API key:  in {location.describe()}")
    for label, limit in (("Upload", settings.limit_upload), ("Download", settings.limit_download)):
        if limit is not None:
            print(f"{label + ':':<9} limited to {limit:g} Mbit/s")
    if settings.parallel_backups > 1:
        print(f"Parallel: up to {settings.parallel_backups} configs backed up at the same time")
    if location.kind == "file":
        err(
            f"warning: no usable OS keychain here, so the API key is stored in {location.detail} "
            "(readable only by you, mode 0600). Anyone with access to your account or root can read it."
        )
    return EXIT_OK
