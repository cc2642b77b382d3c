"""``backapp-agent pair``: trade a pairing code from the web console for this machine's API key.

The key goes straight from the server's answer to the OS keychain (as ``configure`` stores it);
it is never printed. Exit status: 0 paired; 1 the server refused the code (unknown, used, expired,
or too many wrong codes) or did not answer; 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from desktop_agent import __version__
from desktop_agent.engine import (
    AgentError,
    AgentSettings,
    ApiClient,
    ApiError,
    ConfigurationError,
    KeyStore,
    NetworkError,
    RetryPolicy,
    config_dir,
    load_settings,
    redeem_pairing_code,
    save_settings,
)

from .common import EXIT_FAILED, EXIT_OK, account, err

__all__ = ["cmd_pair", "refusal"]


def refusal(exc: ApiError) -> str:
    """The server's reason for refusing a code, in its own words (without the field's name)."""
    detail = exc.detail.removeprefix("code: ")
    return detail[:1].upper() + detail[1:]


def cmd_pair(args: argparse.Namespace) -> int:
    """Redeem the code, then save the settings and the key; nothing is saved on a refusal."""
    try:
        current = load_settings()
    except ConfigurationError as exc:
        err(f"{exc}; starting from default settings")
        current = AgentSettings()
    server = (args.server or current.server_url or "").strip().rstrip("/")
    if not server:
        raise ConfigurationError("--server URL is required the first time")
    settings = replace(current, server_url=server).validated()
    try:
        paired = redeem_pairing_code(server, args.code, platform=sys.platform, version=__version__)
    except ApiError as exc:
        if exc.status == 404 and exc.error == "not_found" and "pairing code" not in exc.detail:
            err(f"{server} does not know pairing codes (is it a BackApp server, and up to date?)")
        else:
            err(f"{refusal(exc)}. Nothing was saved.")
        return EXIT_FAILED
    except NetworkError as exc:
        err(f"{exc}. Nothing was saved.")
        return EXIT_FAILED

    store = KeyStore(config_dir())
    settings = replace(settings, agent_id=paired.agent_id)
    path = save_settings(settings)
    if current.server_url and account(current.server_url) != account(server):
        store.delete(account(current.server_url))
    location = store.save(account(server), paired.api_key)
    print(f"Paired with {server} as “{paired.name}” (agent {paired.agent_id}).")
    print(f"Settings: {path}")
    print(f"API key:  in {location.describe()} (never shown)")
    if location.kind == "file":
        err(
            f"warning: no usable OS keychain here, so the API key is stored in {location.detail} "
            "(readable only by you, mode 0600). Anyone with access to your account or root can read it."
        )
    try:
        with ApiClient(server, paired.api_key, retry=RetryPolicy(max_attempts=2)) as client:
            client.heartbeat(version=__version__, platform=sys.platform)
            configs = client.list_configs()
    except AgentError as exc:  # paired all the same: the next run will tell
        err(f"paired, but the first heartbeat failed: {exc}")
        return EXIT_OK
    if configs:
        print(f"{len(configs)} backup configuration(s) assigned:")
        for config in configs:
            sources = ", ".join(s.path for s in config.sources)
            print(f"  • {config.name or config.id}: {sources}")
    else:
        print("No backup configuration is assigned yet: assign one in the web console.")
    return EXIT_OK
