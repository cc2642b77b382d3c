"""How ``backapp-agent`` shows engine events: a one-line live display on a terminal, JSON lines for
machines (``--json``), or just the summaries when the output is a pipe or a log file; the daemon's
one line per outcome; the restore's status line."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

from desktop_agent.engine import (
    ArchiveProgress,
    BackupFailed,
    BackupFinished,
    ConfigStarted,
    Event,
    EventSink,
    FileFailed,
    RestoreFailed,
    RestoreProgress,
    RestoreSkipped,
    ScanFinished,
    ScanProgress,
    UploadProgress,
    UploadResumed,
    UploadStarted,
    UploadWaiting,
    agent_bandwidth,
    event_to_json,
    printable,
)

MAX_FILE_ERRORS_SHOWN = 20
MAX_SKIPS_SHOWN = 50


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bytes_or_unknown(n: int | None) -> str:
    """``human_bytes``, or ``?`` when the server did not say."""
    return human_bytes(n) if n is not None else "?"


def count_or_unknown(n: int | None) -> str:
    """``12,345``, or ``?`` when the server did not say."""
    return f"{n:,}" if n is not None else "?"


def listed_at(completed_at: str | None, started_at: str | None) -> str:
    """A listed backup's time in a table (UTC, to the second): completed, else started."""
    return (completed_at or started_at or "").replace("T", " ")[:19]


def file_line(*, kind: str, mode: int, size: int, mtime: float, name: str, link: str) -> str:
    """One listed file as ``ls -l`` shows it: type and permissions, size, time (UTC), name, and
    where a ``symlink`` points (``link``) or what a ``hardlink`` is a link to."""
    when = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M")
    type_bits = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(kind, stat.S_IFREG)
    arrow = {"symlink": f" -> {link}", "hardlink": f" link to {link}"}.get(kind, "")
    return printable(f"{stat.filemode(mode | type_bits)} {size:>12} {when}  {name}{arrow}")


T = TypeVar("T")


def print_listing(
    found: Sequence[T],
    *,
    as_json: bool,
    key: str,
    json_row: Callable[[T], dict[str, Any]],
    empty: str,
    header: str,
    line: Callable[[T], str],
) -> None:
    """A listing command's output: ``{key: [json_row(item), ...]}`` as JSON; else ``empty`` when
    nothing was found, or the table's ``header`` and one (printable) ``line`` an item."""
    if as_json:
        print(json.dumps({key: [json_row(i) for i in found]}, indent=2, ensure_ascii=False))
        return
    if not found:
        print(empty)
        return
    print(header)
    for item in found:
        print(printable(line(item)))


def human_duration(seconds: float | None) -> str:
    """``83`` -> ``0:01:23``; ``None`` -> ``--:--``."""
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def waiting_line(event: UploadWaiting) -> str:
    """``waiting for storage: <why> (retrying for up to 10 min)``."""
    target = "the BackApp server" if event.waiting_for == "server" else "storage"
    budget = (
        f"retrying for up to {human_duration(event.gives_up_in + event.retry_in)}"
        if event.gives_up_in is not None
        else "retrying"
    )
    return f"waiting for {target}: {event.reason} ({budget})"


class JsonLines:
    """Every event as one JSON object per line (see docs/agent.md)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        # ASCII escapes keep every line valid UTF-8 and lossless, even for a file name that is not
        # UTF-8 (its bytes travel as lone surrogates, "\udce9", which json.loads gives back).
        self.out.write(json.dumps(event_to_json(event)) + "\n")
        self.out.flush()


class Summary:
    """Only the outcome of each config, one line each, plus per-file errors (for pipes and logs)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._file_errors = 0
        self._waiting = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, ConfigStarted):
            self._file_errors = 0
            self._waiting = False
        elif isinstance(event, UploadWaiting):
            if not self._waiting:  # once per outage, not at every try
                self._waiting = True
                self.line(f"  {waiting_line(event)}")
        elif isinstance(event, UploadResumed):
            self._waiting = False
            self.line(f"  the upload goes on after waiting {human_duration(event.waited)}")
        elif isinstance(event, FileFailed):
            self._file_errors += 1
            if self._file_errors <= MAX_FILE_ERRORS_SHOWN:
                self.line(f"  warning: {event.path!r}: {event.message}")
            elif self._file_errors == MAX_FILE_ERRORS_SHOWN + 1:
                self.line("  warning: more file errors follow (see the backup log)")
        elif isinstance(event, BackupFinished):
            warn = f", {event.errors} file error(s)" if event.errors else ""
            self.line(
                f"{'WARN' if event.errors else 'OK'}   {event.config_name or event.config_id}: "
                f"{event.files} files, {human_bytes(event.bytes)} -> {event.filename} "
                f"({human_bytes(event.archive_size)}) in {event.duration_ms / 1000:.1f} s{warn}"
            )
        elif isinstance(event, BackupFailed):
            word = "CANCELLED" if event.cancelled else "FAILED"
            self.line(f"{word} {event.config_name or event.config_id}: {event.reason}")

    def line(self, text: str) -> None:
        self.out.write(printable(text) + "\n")
        self.out.flush()


class LiveProgress(Summary):
    """A status line rewritten in place (files, bytes, rate, ETA), above it the summaries."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._name = ""
        self._uploaded = 0
        self._status = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, ConfigStarted):
            self._name = event.config_name or event.config_id
            self._uploaded = 0
        if isinstance(event, ScanProgress | ScanFinished):
            self.status(
                f"{self._name}: scanning... {event.files:,} files, {human_bytes(event.bytes)}"
            )
        elif isinstance(event, UploadStarted):
            pass
        elif isinstance(event, UploadProgress):
            self._uploaded = event.bytes_uploaded
        elif isinstance(event, ArchiveProgress):
            self.status(
                f"{self._name}: {event.files_done:,}/{event.files_total:,} files  "
                f"{human_bytes(event.bytes_done)}/{human_bytes(event.bytes_total)}  "
                f"{human_bytes(event.rate)}/s  ETA {human_duration(event.eta)}  "
                f"sent {human_bytes(self._uploaded)}"
                + (f"  ({limit})" if (limit := agent_bandwidth().upload_text()) else "")
            )
        super().__call__(event)

    def status(self, text: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._status = printable(text)[:width]
        self.out.write("\r\x1b[K" + self._status)
        self.out.flush()

    def line(self, text: str) -> None:
        self.out.write("\r\x1b[K" + printable(text) + "\n")
        if self._status:
            self.out.write(self._status)
        self.out.flush()

    def close(self) -> None:
        self.out.write("\r\x1b[K")
        self.out.flush()


def make_display(
    json_lines: bool, out: TextIO | None = None, err: TextIO | None = None
) -> Summary | JsonLines:
    """JSON lines on stdout; else a live line on stderr when it is a terminal; else summaries."""
    out = out or sys.stdout
    err = err or sys.stderr
    if json_lines:
        return JsonLines(out)
    if err.isatty():
        return LiveProgress(err)
    return Summary(out)


def daemon_display(as_json: bool) -> EventSink:
    """``--json``: every event as a JSON line; else one line per finished or failed backup."""
    if as_json:
        return JsonLines(sys.stdout)

    waiting: list[bool] = []  # an outage is said once, not at every try

    def lines(event: Event) -> None:
        data = event_to_json(event)
        if isinstance(event, UploadWaiting):
            if not waiting:
                waiting.append(True)
                print(printable(f"{data['time']} {waiting_line(event)}"), flush=True)
            return
        if isinstance(event, UploadResumed | BackupFinished | BackupFailed):
            waiting.clear()
        if event.kind == "backup_finished":
            print(
                printable(
                    f"{data['time']} completed '{data['configName'] or data['configId']}': "
                    f"{data['filename']} ({data['files']} files, {human_bytes(data['archiveSize'])})"
                ),
                flush=True,
            )
        elif event.kind == "backup_failed":
            word = "cancelled" if data.get("cancelled") else "FAILED"
            print(
                printable(
                    f"{data['time']} {word} '{data['configName'] or data['configId']}': "
                    f"{data['reason']}"
                ),
                flush=True,
            )

    return lines


class RestoreDisplay:
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
        """Clear the status line."""
        if self.live:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
