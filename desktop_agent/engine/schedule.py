"""Backup schedules: parsing, normalising and the maths of when a config is due.

One module for the server (validation, "expected interval" alerts, server-side runs) and every agent
(tray app, ``backapp-agent daemon``), so both sides agree on what a schedule means.

A schedule is stored in a config's ``options.schedule`` as one of::

    {"preset": "hourly", "minute": 15}
    {"preset": "daily", "at": "02:30"}
    {"preset": "weekly", "day": "mon", "at": "02:30"}
    {"cron": "*/5 * * * *"}

or ``null`` (run only when asked). Times are wall-clock times in the time zone of the machine that
runs the config (the agent's; the server's own for server-side configs). Cron expressions have the
classic five fields; the shortest period allowed is one minute. An agent reads a config's schedule
with ``parse_stored_schedule`` and its own zone with ``local_timezone_name``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = [
    "Schedule",
    "ScheduleError",
    "local_timezone_name",
    "parse_stored_schedule",
    "resolve_timezone",
]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_PRESETS = ("hourly", "daily", "weekly")


class ScheduleError(ValueError):
    """A schedule that cannot be understood; the message says what to fix."""


def resolve_timezone(name: str | None) -> tzinfo:
    """The zone called ``name`` (IANA, e.g. ``Europe/Paris``), or UTC when empty or unknown."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _valid_zone(name: str) -> str | None:
    name = name.strip().lstrip(":")
    if not name or name.startswith("/") or ".." in name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def local_timezone_name(
    env: Mapping[str, str] | None = None,
    localtime: Path = Path("/etc/localtime"),
    timezone_file: Path = Path("/etc/timezone"),
) -> str | None:
    """This machine's IANA time zone name (``Europe/Paris``), or ``None`` when it cannot tell (the
    schedules then run in UTC and the heartbeat sends no zone).

    From ``$TZ`` when it names a zone, else the target of the ``/etc/localtime`` link (Linux, macOS:
    ``…/zoneinfo/Europe/Paris``), else ``/etc/timezone`` (Debian)."""
    env = os.environ if env is None else env
    tz = env.get("TZ")
    if tz:
        return _valid_zone(tz)
    try:
        target = os.readlink(localtime)
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        found = _valid_zone(target.split("zoneinfo/", 1)[1])
        if found:
            return found
    try:
        return _valid_zone(timezone_file.read_text(encoding="utf-8").strip())
    except OSError:
        return None


def _parse_at(value: Any) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    if not isinstance(value, str) or not (m := _AT.match(value.strip())):
        raise ScheduleError("'at' must be a time of day as HH:MM, e.g. \"02:30\"")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: its cron expression plus the form the user wrote it in."""

    cron: str
    spec: dict[str, Any]

    @classmethod
    def parse(cls, value: Any) -> Schedule | None:
        """Parse ``options.schedule``; ``None``/empty means manual only. Raises ScheduleError."""
        if value is None or value == {} or value == "":
            return None
        if isinstance(value, str):
            value = {"preset": value} if value in _PRESETS else {"cron": value}
        if not isinstance(value, dict):
            raise ScheduleError('schedule must be an object such as {"preset": "daily"}')
        unknown = set(value) - {"preset", "cron", "at", "day", "minute"}
        if unknown:
            raise ScheduleError(f"unknown schedule field(s): {', '.join(sorted(unknown))}")
        if "cron" in value and "preset" in value:
            # The normalised form (what the server stores and sends) carries both; they must agree.
            parsed = cls.parse({k: v for k, v in value.items() if k != "cron"})
            cron = value["cron"]
            if parsed is None or not isinstance(cron, str) or " ".join(cron.split()) != parsed.cron:
                raise ScheduleError(
                    "give either 'cron' or 'preset', not both (with a preset, 'cron' may only "
                    "repeat the preset's own expression)"
                )
            return parsed
        if "cron" in value:
            expr = value["cron"]
            if not isinstance(expr, str) or len(expr) > 200:
                raise ScheduleError("'cron' must be a string of five fields")
            expr = " ".join(expr.split())
            if len(expr.split(" ")) != 5 or not croniter.is_valid(expr):
                raise ScheduleError(
                    f"'{expr}' is not a valid cron expression (five fields: minute hour "
                    'day-of-month month day-of-week, e.g. "*/15 * * * *")'
                )
            return cls(cron=expr, spec={"cron": expr})
        preset = value.get("preset")
        if preset not in _PRESETS:
            raise ScheduleError("'preset' must be one of hourly, daily, weekly (or give 'cron')")
        if preset == "hourly":
            minute = value.get("minute", 0)
            if isinstance(minute, bool) or not isinstance(minute, int) or not 0 <= minute <= 59:
                raise ScheduleError("'minute' must be a whole number from 0 to 59")
            return cls(cron=f"{minute} * * * *", spec={"preset": "hourly", "minute": minute})
        hour, minute = _parse_at(value.get("at"))
        at = f"{hour:02d}:{minute:02d}"
        if preset == "daily":
            return cls(cron=f"{minute} {hour} * * *", spec={"preset": "daily", "at": at})
        day = str(value.get("day", "mon")).strip().lower()[:3]
        if day not in _DAYS:
            raise ScheduleError("'day' must be a weekday name, e.g. \"mon\"")
        return cls(
            cron=f"{minute} {hour} * * {_DAYS.index(day)}",
            spec={"preset": "weekly", "day": day, "at": at},
        )

    def to_json(self) -> dict[str, Any]:
        """The normalised form stored in the config (and sent to agents), cron always included."""
        return {**self.spec, "cron": self.cron}

    def describe(self) -> str:
        """A short human description, for pages and status lines."""
        preset = self.spec.get("preset")
        if preset == "hourly":
            return f"Hourly at :{self.spec['minute']:02d}"
        if preset == "daily":
            return f"Daily at {self.spec['at']}"
        if preset == "weekly":
            return f"Weekly on {self.spec['day'].capitalize()} at {self.spec['at']}"
        return f"Cron {self.cron}"

    # -- time maths (all arguments and results are aware datetimes) --------------------------

    def next_after(self, moment: datetime, tz: tzinfo) -> datetime:
        """The first fire time strictly after ``moment``, in UTC."""
        it = croniter(self.cron, moment.astimezone(tz))
        return it.get_next(datetime).astimezone(UTC)  # type: ignore[no-any-return]

    def last_at_or_before(self, moment: datetime, tz: tzinfo) -> datetime:
        """The latest fire time at or before ``moment``, in UTC."""
        # croniter works in whole seconds: start from the next whole second so that a fire time
        # equal to ``moment`` counts, and never one after it (13:32:59.5 must not give 13:33).
        local = moment.astimezone(tz).replace(microsecond=0)
        it = croniter(self.cron, local + timedelta(seconds=1))
        return it.get_prev(datetime).astimezone(UTC)  # type: ignore[no-any-return]

    def due(
        self, last_run: datetime | None, now: datetime, tz: tzinfo, since: datetime | None = None
    ) -> datetime | None:
        """The fire time to run for now, or None when nothing is due.

        A run is due when a fire time passed after ``last_run`` (or after ``since``, e.g. when the
        config was created, if it never ran). Several missed fire times (a laptop that slept through
        a night) give one catch-up run, not one per missed slot: the latest missed time is returned.
        """
        latest = self.last_at_or_before(now, tz)
        floor = last_run or since
        if floor is not None and latest <= floor:
            return None
        if floor is None:
            return None
        return latest

    def interval(self, moment: datetime, tz: tzinfo) -> timedelta:
        """The gap between the fire time at/before ``moment`` and the next one."""
        before = self.last_at_or_before(moment, tz)
        return self.next_after(before, tz) - before


def parse_stored_schedule(value: Any) -> Schedule | None:
    """A config's ``options.schedule`` as the server sends it (the normalised form: ``cron`` next to
    the preset). Should the two ever disagree, the cron wins. Raises ``ScheduleError``."""
    try:
        return Schedule.parse(value)
    except ScheduleError:
        if isinstance(value, dict) and "cron" in value and "preset" in value:
            return Schedule.parse({"cron": value["cron"]})
        raise
