"""``backapp-agent update [--check] [--json]``: one update check, and the update, now.

The daemon updates a single-file build by itself at an idle moment; this command is for doing it
by hand (or for installs with ``autoUpdate`` off). It heartbeats (which also confirms an update
that was just installed), reads the server's offer and, without ``--check``, installs it and
restarts itself as the new build with the same arguments: the new build's heartbeat confirms the
update and it prints the result. A version refused earlier is tried again (the daemon waits a day).
"""

from __future__ import annotations

import argparse
import json
import sys

from desktop_agent import __version__
from desktop_agent.engine import (
    ApiClient,
    RetryPolicy,
    Updater,
    UpdateResult,
    config_dir,
    load_settings,
    offer_from,
)

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, load_key

__all__ = ["cmd_update"]


def cmd_update(args: argparse.Namespace) -> int:
    settings = load_settings()
    key = load_key(settings)
    updater = Updater(config_dir())
    if updater.startup():  # this build missed its deadline: the previous one is back
        updater.restart()
    just_updated = updater.pending
    assert settings.server_url
    with ApiClient(settings.server_url, key, retry=RetryPolicy(max_attempts=2)) as client:
        beat = client.heartbeat(version=__version__, platform=sys.platform)
    confirmed = updater.confirm()
    offer = offer_from(beat.update)
    if confirmed and just_updated is not None:
        # The second half of an update this command started: the new build, restarted.
        now = updater.current
        result = UpdateResult(
            "updated",
            just_updated.from_version,
            now,
            f"updated {just_updated.from_version} to {now} (confirmed by the server)",
        )
    elif args.check:
        result = updater.plan(offer, manual=True)
    else:
        result = updater.apply(offer, manual=True)
        if result.status == "updated":
            if not args.json:
                print(f"{result.message.capitalize()}; restarting as it...", file=sys.stderr)
            updater.restart()
    return _report(result, args.json)


def _report(result: UpdateResult, as_json: bool) -> int:
    status = {"refused": EXIT_FAILED, "failed": EXIT_FAILED, "unsupported": EXIT_USAGE}.get(
        result.status, EXIT_OK
    )
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return status
    text = result.message[:1].upper() + result.message[1:] + "."
    if result.status in ("refused", "failed"):
        err(result.message)
    elif result.status == "available":
        print(f"{text} Run backapp-agent update to install it.")
    else:
        print(text)
    return status
