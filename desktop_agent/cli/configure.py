"""``backapp-agent configure``: the server, the settings, and the API key in the OS keychain."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace

from desktop_agent import __version__
from desktop_agent.engine import (
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

from .common import EXIT_FAILED, EXIT_OK, account, err


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
    if args.allow_server_commands is not None:
        settings = replace(settings, allow_server_commands=args.allow_server_commands)
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
    if settings.allow_server_commands:
        print("Commands: configs' pre/post commands set on the server run on this machine")
    if settings.parallel_backups > 1:
        print(f"Parallel: up to {settings.parallel_backups} configs backed up at the same time")
    if location.kind == "file":
        err(
            f"warning: no usable OS keychain here, so the API key is stored in {location.detail} "
            "(readable only by you, mode 0600). Anyone with access to your account or root can read it."
        )
    return EXIT_OK
