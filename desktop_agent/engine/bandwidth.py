"""Bandwidth limits as the server manages them: parsing, normalising and which limit holds when.

One module for the server (it validates what the owner sets on an agent's page or in a config's
``options.limits``) and every agent (it applies them), so both sides agree on what a limit means,
as with ``schedule``. A limit set is stored and sent as::

    {"upload": 50, "download": null,
     "schedule": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00",
                   "upload": 10, "download": 10}],
     "pauseOnMetered": true, "pauseOnBattery": false}

``upload`` / ``download`` are Mbit/s (10^6 bits per second; ``null``: unlimited). Inside a
``schedule`` window the window's own limits hold; outside every window the top-level ones. So
"10 Mbit/s from 09:00 to 18:00 on weekdays, unlimited otherwise" is ``{"schedule": [{"days":
"weekdays", "from": "09:00", "to": "18:00", "upload": 10, "download": 10}]}``. Times are wall-clock
times of the agent's machine; a window whose ``to`` is earlier than its ``from`` runs past
midnight (its days are the days it starts on). ``days`` takes day names (``mon`` or ``monday``),
ranges (``mon-fri``), ``weekdays``, ``weekend`` and ``daily``, as a list or one string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "MAX_MBPS",
    "MAX_WINDOWS",
    "BandwidthLimits",
    "LimitWindow",
    "LimitsError",
    "Rates",
    "lowest",
    "mbps_text",
]

MAX_MBPS = 100_000.0
"""The highest limit accepted (100 Gbit/s); anything faster is no limit at all."""
MAX_WINDOWS = 20
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_GROUPS = {
    "weekdays": range(5),
    "weekend": range(5, 7),
    "daily": range(7),
    "every day": range(7),
}
_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
_KEYS = {"upload", "download", "schedule", "pauseOnMetered", "pauseOnBattery"}
_WINDOW_KEYS = {"days", "from", "to", "upload", "download"}


class LimitsError(ValueError):
    """A limit set that cannot be honoured; the message names the field and says why."""


def mbps_text(mbps: float) -> str:
    """``10 Mbit/s``, ``2.5 Mbit/s``."""
    return f"{mbps:g} Mbit/s"


def _limit(raw: Any, where: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise LimitsError(f"{where}: a limit is a number of Mbit/s, or null for no limit")
    if raw <= 0:
        raise LimitsError(
            f"{where}: a limit must be more than 0 Mbit/s (null or left out: no limit)"
        )
    if raw > MAX_MBPS:
        raise LimitsError(f"{where}: at most {MAX_MBPS:g} Mbit/s (null or left out: no limit)")
    return float(raw)


def _day(token: str, where: str) -> Iterable[int]:
    token = token.strip().lower()
    if token in _GROUPS:
        return _GROUPS[token]
    if "-" in token:
        first, _, last = token.partition("-")
        a, b = _day_index(first, where), _day_index(last, where)
        return [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return [_day_index(token, where)]


def _day_index(token: str, where: str) -> int:
    token = token.strip().lower()
    if token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    if token in _FULL_NAMES:
        return _FULL_NAMES.index(token)
    raise LimitsError(
        f"{where}: {token!r} is not a day (mon…sun, a range like mon-fri, weekdays, weekend, daily)"
    )


def _minute(raw: Any, where: str) -> int:
    match = _TIME.match(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise LimitsError(f"{where}: a time is HH:MM (00:00 to 24:00), not {raw!r}")
    minute = int(match.group(1)) * 60 + int(match.group(2))
    if minute > 24 * 60:
        raise LimitsError(f"{where}: a time is HH:MM (00:00 to 24:00), not {raw!r}")
    return minute


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True, slots=True)
class Rates:
    """Upload and download limits in Mbit/s (``None``: unlimited)."""

    upload: float | None = None
    download: float | None = None


def lowest(*rates: Rates) -> Rates:
    """The lower limit of each direction (a limit beats no limit): how limits set in several
    places combine (the agent's local setting and the server's, several running configs)."""

    def low(values: Iterable[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return min(present) if present else None

    return Rates(low(r.upload for r in rates), low(r.download for r in rates))


@dataclass(frozen=True, slots=True)
class LimitWindow:
    """A weekly window with its own limits: ``days`` (0 = Monday), ``start`` and ``end`` minutes
    of the day (``end`` before ``start``: past midnight)."""

    days: frozenset[int]
    start: int
    end: int
    rates: Rates

    @classmethod
    def parse(cls, raw: Any, where: str) -> LimitWindow:
        if not isinstance(raw, Mapping):
            raise LimitsError(
                f"{where}: a window is an object with days, from, to, upload, download"
            )
        unknown = sorted(set(raw) - _WINDOW_KEYS)
        if unknown:
            raise LimitsError(f"{where}: unknown field {unknown[0]!r}")
        days_raw = raw.get("days", "daily")
        tokens = [days_raw] if isinstance(days_raw, str) else days_raw
        if (
            not isinstance(tokens, list)
            or not tokens
            or not all(isinstance(t, str) for t in tokens)
        ):
            raise LimitsError(f"{where}.days: a list of days, or one string like 'weekdays'")
        days: set[int] = set()
        for token in tokens:
            for piece in token.split(","):
                days.update(_day(piece, f"{where}.days"))
        if "from" not in raw or "to" not in raw:
            raise LimitsError(f"{where}: a window needs both from and to (HH:MM)")
        start, end = _minute(raw["from"], f"{where}.from"), _minute(raw["to"], f"{where}.to")
        start, end = start % (24 * 60), end % (24 * 60)
        if start == end:
            raise LimitsError(f"{where}: from and to are the same time; the window would be empty")
        rates = Rates(
            _limit(raw.get("upload"), f"{where}.upload"),
            _limit(raw.get("download"), f"{where}.download"),
        )
        return cls(frozenset(days), start, end, rates)

    def contains(self, when: datetime) -> bool:
        """Whether the local time ``when`` falls inside this window."""
        minute, day = when.hour * 60 + when.minute, when.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "days": [_DAY_NAMES[d] for d in sorted(self.days)],
            "from": _hhmm(self.start),
            "to": _hhmm(self.end),
            "upload": self.rates.upload,
            "download": self.rates.download,
        }


@dataclass(frozen=True, slots=True)
class BandwidthLimits:
    """A limit set (see the module's docstring); ``parse`` it, ask it for the ``rates`` at a
    moment, send it back ``to_json``."""

    upload: float | None = None
    download: float | None = None
    schedule: tuple[LimitWindow, ...] = field(default=())
    pause_on_metered: bool = False
    pause_on_battery: bool = False

    @classmethod
    def parse(cls, raw: Any, where: str = "limits") -> BandwidthLimits | None:
        """The limits in ``raw`` (the JSON form), ``None`` for ``None``; ``LimitsError`` naming
        the field otherwise."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise LimitsError(f"{where}: an object (upload, download, schedule, pauseOnMetered, …)")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise LimitsError(f"{where}: unknown field {unknown[0]!r}")
        schedule = raw.get("schedule") or []
        if not isinstance(schedule, list):
            raise LimitsError(f"{where}.schedule: a list of windows")
        if len(schedule) > MAX_WINDOWS:
            raise LimitsError(f"{where}.schedule: at most {MAX_WINDOWS} windows")
        for flag in ("pauseOnMetered", "pauseOnBattery"):
            if not isinstance(raw.get(flag, False), bool):
                raise LimitsError(f"{where}.{flag}: true or false")
        return cls(
            upload=_limit(raw.get("upload"), f"{where}.upload"),
            download=_limit(raw.get("download"), f"{where}.download"),
            schedule=tuple(
                LimitWindow.parse(w, f"{where}.schedule[{i}]") for i, w in enumerate(schedule)
            ),
            pause_on_metered=bool(raw.get("pauseOnMetered", False)),
            pause_on_battery=bool(raw.get("pauseOnBattery", False)),
        )

    def to_json(self) -> dict[str, Any]:
        """The normalised JSON form (what the server stores and sends)."""
        return {
            "upload": self.upload,
            "download": self.download,
            "schedule": [w.to_json() for w in self.schedule],
            "pauseOnMetered": self.pause_on_metered,
            "pauseOnBattery": self.pause_on_battery,
        }

    @property
    def empty(self) -> bool:
        """Nothing is limited and nothing pauses (the same as no limit set)."""
        return (
            self.upload is None
            and self.download is None
            and all(w.rates == Rates() for w in self.schedule)
            and not self.pause_on_metered
            and not self.pause_on_battery
        )

    def rates(self, when: datetime) -> Rates:
        """The limits at the local time ``when``: the first window that holds it, else the
        top-level ones."""
        for window in self.schedule:
            if window.contains(when):
                return window.rates
        return Rates(self.upload, self.download)

    def describe(self) -> str:
        """In words, for pages and logs: ``upload 10 Mbit/s on mon-fri 09:00-18:00, unlimited
        otherwise; pauses on metered connections``."""

        def pair(r: Rates) -> str:
            if r.upload is None and r.download is None:
                return "unlimited"
            up = mbps_text(r.upload) if r.upload is not None else "unlimited"
            down = mbps_text(r.download) if r.download is not None else "unlimited"
            return f"upload {up}, download {down}"

        parts = [
            f"{pair(w.rates)} on {','.join(_DAY_NAMES[d] for d in sorted(w.days))} "
            f"{_hhmm(w.start)}-{_hhmm(w.end)}"
            for w in self.schedule
        ]
        base = pair(Rates(self.upload, self.download))
        parts.append(f"{base} otherwise" if parts else base)
        text = "; ".join(parts)
        if self.pause_on_metered:
            text += "; pauses on metered connections"
        if self.pause_on_battery:
            text += "; pauses on battery"
        return text
