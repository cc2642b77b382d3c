"""Pure formatting helpers for the pages (registered as Jinja filters and globals)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "LogDetail",
    "ago",
    "compact_json",
    "duration",
    "filesize",
    "log_details",
    "parse_iso",
    "platform",
    "utc",
]

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def parse_iso(value: str | None) -> datetime | None:
    """The services' ISO 8601 UTC strings (``2025-01-07T15:00:00Z``) back to aware datetimes."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filesize(size: int | None) -> str:
    """``1536`` → ``1.5 KiB``; binary units, one decimal; ``None`` → an em dash."""
    if size is None:
        return "—"
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def duration(ms: int | None) -> str:
    """Milliseconds as a person reads them: ``450 ms``, ``4.5 s``, ``45 s``, ``2 min 5 s``,
    ``1 h 2 min``."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def ago(value: str | datetime | None, now: datetime | None = None) -> str:
    """How long ago, coarsely: ``just now``, ``45 s ago``, ``3 min ago``, ``2 h ago``,
    ``3 days ago``; ``never`` for ``None``."""
    when = parse_iso(value) if isinstance(value, str) or value is None else value
    if when is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = int((now - when).total_seconds())
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    return "1 day ago" if days == 1 else f"{days} days ago"


def utc(value: str | None) -> str:
    """``2025-01-07T15:00:00.123Z`` → ``2025-01-07 15:00:00 UTC``."""
    when = parse_iso(value)
    if when is None:
        return "—"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def compact_json(value: Any, limit: int = 2000) -> str:
    """Log metadata on one line (plain text: the template escapes it)."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_PLATFORMS = {"darwin": "macOS", "linux": "Linux", "win32": "Windows"}


def platform(value: str | None) -> str:
    """An agent's ``sys.platform`` as people say it: ``darwin`` → ``macOS``."""
    if not value:
        return "—"
    return _PLATFORMS.get(value, value)


@dataclass(frozen=True)
class LogDetail:
    """One piece of a log line's metadata as the agent page shows it: ``kind`` ``config`` and
    ``backup`` are ids the template links (``value``), ``errors`` a list of ``lines``, ``text``
    plain ``value``."""

    label: str
    kind: Literal["config", "backup", "errors", "text"]
    value: str = ""
    lines: tuple[str, ...] = ()


_LABELS = {
    "configId": "Configuration",
    "logId": "Backup",
    "backupId": "Backup",
    "durationMs": "Duration",
    "errors": "File errors",
    "filename": "Archive",
}
_SIZES = {"size", "bytes", "archiveSize", "bytesTransferred", "bytesRead", "bytesUploaded"}
_DURATIONS = {"duration", "durationMs"}


def _words(key: str) -> str:
    """``retryAfterSeconds`` → ``Retry after seconds``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).replace("_", " ").lower()
    return spaced[:1].upper() + spaced[1:]


def _error_line(item: Any) -> str:
    if isinstance(item, dict):
        path, message = item.get("path"), item.get("message", "")
        return f"{path}: {message}" if path else str(message)
    return str(item)


def log_details(metadata: Any) -> list[LogDetail]:
    """An agent log line's metadata in words: ids to link, sizes in KiB/MiB, durations, file errors
    one per line, anything else as ``Label: value`` (raw JSON only for nested values)."""
    if not isinstance(metadata, dict):
        return [LogDetail("Details", "text", compact_json(metadata))] if metadata else []
    out: list[LogDetail] = []
    for key, value in metadata.items():
        if value is None or value == [] or value == {}:
            continue
        label = _LABELS.get(key) or _words(str(key))
        if key == "configId" and isinstance(value, str):
            out.append(LogDetail(label, "config", value))
        elif key in ("logId", "backupId") and isinstance(value, str):
            out.append(LogDetail(label, "backup", value))
        elif key == "errors" and isinstance(value, list):
            out.append(LogDetail(label, "errors", lines=tuple(_error_line(e) for e in value)))
        elif key in _SIZES and isinstance(value, int) and not isinstance(value, bool):
            out.append(LogDetail(label, "text", filesize(value)))
        elif key in _DURATIONS and isinstance(value, int) and not isinstance(value, bool):
            out.append(LogDetail(label, "text", duration(value)))
        elif isinstance(value, str | int | float | bool):
            out.append(LogDetail(label, "text", str(value)))
        else:
            out.append(LogDetail(label, "text", compact_json(value, limit=500)))
    return out
