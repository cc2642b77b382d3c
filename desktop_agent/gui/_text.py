"""Qt-free text helpers: sizes, durations, and the redaction that keeps API keys out of the UI."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

__all__ = ["KeyRedactor", "eta_text", "human_bytes", "parse_time", "rate_text", "redact"]

_KEY = re.compile(r"bka_[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """``text`` with anything shaped like an agent API key (``bka_…``) replaced."""
    return _KEY.sub("bka_…(hidden)", text)


class KeyRedactor(logging.Filter):
    """A logging filter that rewrites a record's message with ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def rate_text(rate: float) -> str:
    return f"{human_bytes(rate)}/s"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    delta = int(((now or datetime.now(UTC)) - when).total_seconds())
    if delta < 60:
        return "just now"
    if delta < 3600:
        return f"{delta // 60} min ago"
    if delta < 86400:
        return f"{delta // 3600} h ago"
    return f"{delta // 86400} d ago"
