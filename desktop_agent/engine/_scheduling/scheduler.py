"""The scheduler: which configs are due now.

From each config's ``options.schedule`` (see ``..schedule``), the agent's time zone, the record kept
per config in ``schedule.json`` (``store``) and an injectable clock. A laptop that slept through
several slots gets one catch-up run; a wall clock that jumps (suspend, or a changed clock) is noticed
by comparing it with the monotonic clock. ``pause`` holds scheduled runs (the slots missed meanwhile
give one catch-up run after ``resume``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from ..protocol import ConfigInfo
from ..schedule import Schedule, ScheduleError, parse_stored_schedule, resolve_timezone
from .store import ScheduleRecord, ScheduleStore

__all__ = ["CATCH_UP_AFTER", "JUMP_THRESHOLD", "Due", "Scheduler", "Tick"]

log = logging.getLogger("desktop_agent.engine.scheduler")

#: The wall clock moved this much more (or less) than the monotonic clock between two ticks: the
#: machine slept, or someone changed the clock.
JUMP_THRESHOLD = 90.0
#: A slot older than this when it is found due is a catch-up (the agent was asleep or off).
CATCH_UP_AFTER = timedelta(seconds=90)


@dataclass(frozen=True, slots=True)
class Due:
    """A config to run now, for the fire time ``slot`` (UTC)."""

    config: ConfigInfo
    slot: datetime
    catch_up: bool
    """The slot passed a while ago (the agent was asleep, off or paused)."""


@dataclass(frozen=True, slots=True)
class Tick:
    due: tuple[Due, ...]
    jump: float
    """Seconds the wall clock moved beyond the monotonic clock since the last tick (positive after
    a suspend, negative when the clock was set back); 0.0 when under the threshold."""


@dataclass(slots=True)
class _Entry:
    config: ConfigInfo
    schedule: Schedule
    since: datetime
    last_run: datetime | None
    """The latest slot handed out (queued); in memory, so a slot is never queued twice."""
    done: datetime | None = None
    """The latest slot whose job ended (succeeded, or failed with no retry left): what
    ``schedule.json`` keeps, so a slot queued but never run (the agent was killed) runs after a
    restart."""

    @property
    def floor(self) -> datetime:
        return max(self.since, self.last_run) if self.last_run else self.since


class Scheduler:
    """Which configs are due. Thread-safe; every time comes from ``now`` (aware, UTC) and
    ``monotonic``, both injectable."""

    def __init__(
        self,
        store: ScheduleStore | None = None,
        timezone: str | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        jump_threshold: float = JUMP_THRESHOLD,
    ) -> None:
        self.store = store
        self.timezone_name = timezone
        self.tz: tzinfo = resolve_timezone(timezone)
        self._now = now
        self._mono = monotonic
        self._jump_threshold = jump_threshold
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._saved: dict[str, dict[str, Any]] = store.load() if store else {}
        self._bad: dict[str, str] = {}
        self._last_tick: tuple[datetime, float] | None = None
        self.paused_until: datetime | None = None
        self._paused = False

    # -- configs --------------------------------------------------------------------------------

    def set_configs(self, configs: Iterable[ConfigInfo]) -> None:
        """The configs assigned to this agent now; those with a schedule are watched."""
        now = self._now()
        with self._lock:
            entries: dict[str, _Entry] = {}
            for config in configs:
                try:
                    schedule = parse_stored_schedule(config.options.schedule)
                except ScheduleError as exc:
                    if self._bad.get(config.id) != str(exc):
                        log.warning("%s: ignoring its schedule: %s", config.name or config.id, exc)
                    self._bad[config.id] = str(exc)
                    continue
                self._bad.pop(config.id, None)
                if schedule is None:
                    continue
                old = self._entries.get(config.id)
                saved = ScheduleRecord.from_json(self._saved.get(config.id, {}))
                if old is not None and old.schedule.cron == schedule.cron:
                    entries[config.id] = replace(old, config=config, schedule=schedule)
                elif old is None and saved.cron == schedule.cron:
                    last = saved.last_run
                    entries[config.id] = _Entry(config, schedule, saved.since or now, last, last)
                else:  # new, or its schedule changed: slots count from now
                    last = old.last_run if old else saved.last_run
                    done = old.done if old else last
                    entries[config.id] = _Entry(config, schedule, now, last, done)
            self._entries = entries
            self._persist()

    def set_timezone(self, name: str | None) -> None:
        with self._lock:
            self.timezone_name, self.tz = name, resolve_timezone(name)

    @property
    def scheduled(self) -> list[ConfigInfo]:
        with self._lock:
            return [e.config for e in self._entries.values()]

    def schedule_of(self, config_id: str) -> Schedule | None:
        with self._lock:
            entry = self._entries.get(config_id)
            return entry.schedule if entry else None

    def last_run(self, config_id: str) -> datetime | None:
        with self._lock:
            entry = self._entries.get(config_id)
            return entry.last_run if entry else None

    def next_run(self, config_id: str) -> datetime | None:
        """When the config runs next (UTC): a slot already due if there is one, else the next."""
        now = self._now()
        with self._lock:
            entry = self._entries.get(config_id)
            if entry is None:
                return None
            due = entry.schedule.due(entry.floor, now, self.tz)
            return due or entry.schedule.next_after(now, self.tz)

    # -- pause ----------------------------------------------------------------------------------

    def pause(self, until: datetime | None = None) -> None:
        """Hold scheduled runs (and retries) until ``until``, or until ``resume``."""
        with self._lock:
            self._paused, self.paused_until = True, until

    def resume(self) -> None:
        with self._lock:
            self._paused, self.paused_until = False, None

    @property
    def paused(self) -> bool:
        with self._lock:
            if self._paused and self.paused_until is not None and self._now() >= self.paused_until:
                self._paused, self.paused_until = False, None
                log.info("scheduled backups resume")
            return self._paused

    # -- the tick -------------------------------------------------------------------------------

    def tick(self) -> Tick:
        """What is due now. A returned slot is not handed out again by this scheduler (the caller
        queues it; a failure is the retries' business, not the next tick's); it is written to
        ``schedule.json`` only once its job has ended (``ran``)."""
        now, mono = self._now(), self._mono()
        with self._lock:
            jump = 0.0
            if self._last_tick is not None:
                wall0, mono0 = self._last_tick
                drift = (now - wall0).total_seconds() - (mono - mono0)
                if abs(drift) >= self._jump_threshold:
                    jump = drift
            self._last_tick = (now, mono)
            if jump > 0:
                log.info(
                    "the clock moved %s more than the time this agent ran (woke from sleep?): "
                    "checking for missed backups",
                    timedelta(seconds=round(jump)),
                )
            elif jump < 0:
                log.warning(
                    "the clock went back by %s: schedules count from now",
                    timedelta(seconds=round(-jump)),
                )
                for entry in self._entries.values():
                    if entry.last_run is not None and entry.last_run > now:
                        entry.last_run = now
                    if entry.done is not None and entry.done > now:
                        entry.done = now
                    entry.since = min(entry.since, now)
                self._persist()
            if self.paused:
                return Tick((), jump)
            due: list[Due] = []
            for entry in self._entries.values():
                slot = entry.schedule.due(entry.floor, now, self.tz)
                if slot is None:
                    continue
                entry.last_run = slot
                catch_up = now - slot > CATCH_UP_AFTER
                if catch_up:
                    log.info(
                        "%s: catching up the backup due at %s",
                        entry.config.name or entry.config.id,
                        slot.astimezone(self.tz).strftime("%Y-%m-%d %H:%M %Z"),
                    )
                due.append(Due(entry.config, slot, catch_up))
            return Tick(tuple(due), jump)

    def ran(self, config_id: str, slot: datetime) -> None:
        """The job for ``slot`` has ended: remember it across restarts."""
        with self._lock:
            entry = self._entries.get(config_id)
            if entry is None or (entry.done is not None and entry.done >= slot):
                return
            entry.done = slot
            self._persist()

    def _persist(self) -> None:
        before = {k: dict(v) for k, v in self._saved.items()}
        for config_id, entry in self._entries.items():
            record = ScheduleRecord(entry.schedule.cron, entry.since, entry.done)
            self._saved[config_id] = record.to_json()
        for config_id in list(self._saved):
            if config_id not in self._entries:
                del self._saved[config_id]
        if self.store is not None and (self._saved != before or not self.store.path.exists()):
            try:
                self.store.save(self._saved)
            except OSError as exc:
                log.warning("could not save %s: %s", self.store.path, exc)
