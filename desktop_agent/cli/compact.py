"""``backapp-agent compact``: rewrite the partly-used packs of this machine's snapshot repository,
so that the server can delete the old ones (the daemon does it on its own when the server asks)."""

from __future__ import annotations

import argparse
import json
import sys

from desktop_agent.engine import AgentError, RepoCompaction, load_settings

from .common import EXIT_FAILED, EXIT_OK, err, load_key
from .display import human_bytes


def cmd_compact(args: argparse.Namespace) -> int:
    settings = load_settings()

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    try:
        with RepoCompaction.from_settings(settings, load_key(settings)) as job:
            result = job.compact(config_id=args.config_id, threshold=args.threshold, say=say)
    except AgentError as exc:
        err(f"compaction failed, nothing was changed: {exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    if result.status == "nothing":
        print(
            f"Nothing to compact: no pack of the {result.snapshots} live snapshot(s) has "
            f"{result.threshold:g}% or more unused bytes."
        )
        return EXIT_OK
    print(
        f"Compacted: {result.packs_rewritten} pack(s) ({human_bytes(result.bytes_rewritten)}) "
        f"rewritten into {result.packs_written} ({human_bytes(result.bytes_written)}); "
        f"{result.snapshots_changed} snapshot(s) now use the new packs."
    )
    when = f" after {result.release_at}" if result.release_at else ""
    print(
        f"The server deletes the old packs{when} (its grace window), freeing "
        f"{human_bytes(result.bytes_saved)}."
    )
    return EXIT_OK
