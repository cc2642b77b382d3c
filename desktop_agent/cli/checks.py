"""``backapp-agent check`` (are this machine's newest snapshots whole, and their bytes good?) and
``backapp-agent drill`` (restore a sample of a snapshot's files and verify them, now). Both report
to the server, which shows the result on the config's page and raises an alert on a failure."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from desktop_agent.engine import AgentError, RepoProofs, load_settings, printable

from .common import EXIT_FAILED, EXIT_OK, err, load_key
from .display import human_bytes

_WORDS = {
    "missing_snapshot": "snapshot missing",
    "missing_tree": "folder listing missing",
    "missing_blob": "not in the index",
    "missing_pack": "pack missing",
    "damaged_pack": "pack damaged",
    "damaged_blob": "blob damaged",
    "unreadable": "unreadable",
    "restore_failed": "not restored",
    "content_mismatch": "wrong content",
}


class _Progress:
    """``reading packs: 3 of 10 (48.0 MiB of 160.0 MiB, 12.3 MiB/s)`` on stderr, at most once a
    second (on one line when stderr is a terminal)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, packs: int, total_packs: int, done: int, total: int) -> None:
        now = time.monotonic()
        if packs not in (0, total_packs) and now - self.last < 1.0:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        line = (
            f"reading packs: {packs} of {total_packs} ({human_bytes(done)} of "
            f"{human_bytes(total)}, {human_bytes(rate)}/s)"
        )
        end = "" if self.tty and packs < total_packs else "\n"
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)
        self.shown = True


def _problem_lines(problems: list[dict[str, Any]]) -> list[str]:
    lines = []
    for p in problems:
        lines.append(f"    {_WORDS.get(str(p['kind']), p['kind'])}: {p['message']}")
        for path in list(p.get("paths") or [])[:5]:
            lines.append(f"      affects {path}")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        with RepoProofs.from_settings(settings, load_key(settings)) as proofs:
            outcome = proofs.check(
                config_id=args.config_id,
                read_percent=args.read_data,
                progress=None if args.json else _Progress(),
            )
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    results = [r.to_json(paths=True) for r in outcome.results]
    if args.json:
        print(
            json.dumps(
                {
                    "ok": outcome.ok,
                    "readData": args.read_data,
                    "results": results,
                    "skipped": [{"config": n, "reason": why} for n, why in outcome.skipped],
                    "reported": outcome.reported,
                    "reportError": outcome.report_error,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return EXIT_OK if outcome.ok else EXIT_FAILED
    if not results and not outcome.skipped:
        print("No snapshot configurations are assigned to this agent.")
    scope = (
        f"structure, and {args.read_data:g}% of the data read back"
        if args.read_data
        else "structure only; --read-data PERCENT also reads the data back"
    )
    if results:
        print(f"Checked the newest snapshot of {len(results)} configuration(s) ({scope}).")
    for r in results:
        name = r.get("configName") or r["configId"]
        head = f"{name} (snapshot {r['backupId']}): "
        if r["ok"]:
            read = (
                f"; {r['packsRead']} packs ({human_bytes(int(r['bytesRead']))}) read and verified"
                if r["packsRead"]
                else ""
            )
            print(
                printable(
                    f"{head}OK: {r['trees']:,} folders, {r['blobs']:,} chunks in "
                    f"{r['packs']:,} packs{read}"
                )
            )
        else:
            count = len(r["problems"])
            print(printable(f"{head}{count} problem{'s' if count != 1 else ''}"))
            for line in _problem_lines(r["problems"]):
                print(printable(line))
    for name, why in outcome.skipped:
        print(printable(f"{name}: not checked ({why})"))
    if outcome.report_error:
        err(f"the result could not be sent to the server: {outcome.report_error}")
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_drill(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        with RepoProofs.from_settings(settings, load_key(settings)) as proofs:
            result = proofs.drill(args.config_id, sample=args.sample)
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    if result is None:
        err("this configuration has no snapshot yet: there is nothing to restore")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.to_json(paths=True), indent=2, ensure_ascii=False))
        return EXIT_OK if result.ok else EXIT_FAILED
    name = result.config_name or result.config_id
    print(
        printable(
            f"Restore drill of {name} (snapshot {result.backup_id}): "
            f"{'passed' if result.ok else 'FAILED'}"
        )
    )
    print(
        f"  {result.files} of {result.sample} sampled files ({human_bytes(result.bytes)}) "
        f"restored and verified in {result.duration_ms / 1000:.1f} s"
    )
    if result.ok and result.throughput is not None:
        first = (
            f"first byte after {result.first_byte_ms} ms, "
            if result.first_byte_ms is not None
            else ""
        )
        projected = result.projected_seconds or 0.0
        print(
            f"  {first}{human_bytes(result.throughput)}/s; a full restore "
            f"({human_bytes(result.snapshot_bytes)}) would take about "
            f"{_words(projected)}"
        )
    if result.error:
        print(printable(f"  {result.error}"))
    for line in _problem_lines([p.to_json(paths=True) for p in result.problems]):
        print(printable(line))
    return EXIT_OK if result.ok else EXIT_FAILED


def _words(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
