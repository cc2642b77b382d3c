"""Scheduled runs, *Back Up Now* requests and automatic retries, for every long-running agent.

No Qt here: ``backapp-agent daemon`` and the tray app drive the same pieces.

- ``Scheduler`` decides which configs are due, from their ``options.schedule`` (see ``schedule``), the
  agent's time zone, a small persisted record per config (``schedule.json`` in the agent's config
  folder: the last slot run and since when the schedule is known) and an injectable clock. A laptop
  that slept through several slots gets one catch-up run; a wall clock that jumps (suspend, or a
  changed clock) is noticed by comparing it with the monotonic clock. ``pause`` holds scheduled runs
  (the slots missed meanwhile give one catch-up run after ``resume``).
- ``Dispatcher`` keeps the queue of jobs (at most one pending per config; *Back Up Now* first), with
  retries waiting for their time. Thread-safe.
- ``Runner`` runs one job: takes the config's lease on the server (another runner holds it: the job
  is skipped), renews it every ``ttl/3`` while the engine works, releases it at the end; tags
  ``backup/start`` with ``trigger``/``attempt``/``maxAttempts``/``runRequestId``; streams progress
  (at most ~1 per second) over the socket or ``POST /api/agent/backup/progress``; and, when a
  scheduled backup fails, returns the retry job (``options.retry``: attempts counting the first,
  delay doubling, jittered, bounded).
- ``Runner.run_manual`` is ``backapp-agent run`` and the tray's own *Back Up Now*: the engine's
  run (heartbeat, configs, each backed up, heartbeat) with every config through ``Runner.run``, so a
  config whose lease is held elsewhere is skipped (``ManualRun.skipped``), never run twice.
- ``AgentService`` is the headless loop (heartbeat every ``pollInterval``, the socket, the scheduler
  tick, one job at a time on a worker thread) behind ``backapp-agent daemon``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from .. import __version__
from ._cancel import CancelToken
from ._engine import BackupEngine, EngineOptions, select_configs
from ._errors import AgentError, ConfigurationError, ConflictError, NotFoundError
from ._events import (
    ArchiveProgress,
    BackupFailed,
    BackupFinished,
    Event,
    EventSink,
    RunFinished,
    RunStarted,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    UploadProgress,
)
from ._settings import AgentSettings
from ._state import StateStore
from ._transport.client import ApiClient
from ._transport.socket import AgentSocket
from ._transport.storage import HttpStorage
from .protocol import (
    BackupResult,
    ConfigInfo,
    ControlPlane,
    Heartbeat,
    Lease,
    LeasePlane,
    PartTicket,
    RunRequest,
    RunResult,
    StartResponse,
    UploadedPart,
)
from .schedule import Schedule, ScheduleError, resolve_timezone

__all__ = [
    "AgentPlane",
    "AgentService",
    "Dispatcher",
    "Due",
    "Job",
    "ManualRun",
    "Outcome",
    "RetrySettings",
    "Runner",
    "ScheduleStore",
    "Scheduler",
    "Skipped",
    "Tick",
    "local_timezone_name",
    "parse_stored_schedule",
]

log = logging.getLogger("desktop_agent.engine.scheduler")

SCHEDULE_FILE = "schedule.json"
#: The wall clock moved this much more (or less) than the monotonic clock between two ticks: the
#: machine slept, or someone changed the clock.
JUMP_THRESHOLD = 90.0
#: A slot older than this when it is found due is a catch-up (the agent was asleep or off).
CATCH_UP_AFTER = timedelta(seconds=90)
#: Bounds of ``options.retry``.
MAX_ATTEMPTS = 10
MAX_RETRY_DELAY = 6 * 3600.0
#: A job that could not start (server unreachable) is tried again after this long.
DEFER_DELAY = 30.0
DEFAULT_LEASE_TTL = 300
PROGRESS_BY_CONFIG = "progress-by-config"
"""The server feature (heartbeat ``features``): progress by ``configId`` before the log opens."""
PRE_LOG_PHASES = frozenset({"scanning", "archiving"})

Trigger = Literal["manual", "schedule", "retry", "request"]


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_stored_schedule(value: Any) -> Schedule | None:
    """A config's ``options.schedule`` as the server sends it (the normalised form: ``cron`` next to
    the preset). Should the two ever disagree, the cron wins. Raises ``ScheduleError``."""
    try:
        return Schedule.parse(value)
    except ScheduleError:
        if isinstance(value, dict) and "cron" in value and "preset" in value:
            return Schedule.parse({"cron": value["cron"]})
        raise


# -- the local time zone ------------------------------------------------------------------------------


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


# -- persisted schedule state ---------------------------------------------------------------------------


class ScheduleStore:
    """``schedule.json``: per config, the cron it was evaluated with, since when (``since``) and the
    last slot run (``lastRun``). Written atomically."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / SCHEDULE_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        configs = data.get("configs") if isinstance(data, dict) else None
        if not isinstance(configs, dict):
            return {}
        return {k: v for k, v in configs.items() if isinstance(k, str) and isinstance(v, dict)}

    def save(self, configs: Mapping[str, Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{SCHEDULE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        body = {"configs": {k: dict(v) for k, v in configs.items()}}
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


# -- the scheduler ------------------------------------------------------------------------------------


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
                saved = self._saved.get(config.id, {})
                if old is not None and old.schedule.cron == schedule.cron:
                    entries[config.id] = replace(old, config=config, schedule=schedule)
                elif old is None and saved.get("cron") == schedule.cron:
                    last = _parse_iso(saved.get("lastRun"))
                    entries[config.id] = _Entry(
                        config, schedule, _parse_iso(saved.get("since")) or now, last, last
                    )
                else:  # new, or its schedule changed: slots count from now
                    last = old.last_run if old else _parse_iso(saved.get("lastRun"))
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
            self._saved[config_id] = {
                "cron": entry.schedule.cron,
                "since": _iso(entry.since),
                "lastRun": _iso(entry.done) if entry.done else None,
            }
        for config_id in list(self._saved):
            if config_id not in self._entries:
                del self._saved[config_id]
        if self.store is not None and (self._saved != before or not self.store.path.exists()):
            try:
                self.store.save(self._saved)
            except OSError as exc:
                log.warning("could not save %s: %s", self.store.path, exc)


# -- jobs and the queue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """``options.retry``: ``attempts`` counting the first (1-10, default 3), ``delaySeconds`` before
    the first retry (default 60), doubling each time, capped at ``MAX_RETRY_DELAY``."""

    attempts: int = 3
    delay_seconds: float = 60.0

    @classmethod
    def from_options(cls, retry: Mapping[str, Any] | None) -> RetrySettings:
        if not isinstance(retry, Mapping):
            return cls()
        attempts, delay = retry.get("attempts", 3), retry.get("delaySeconds", 60)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            attempts = 3
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            delay = 60.0
        return cls(
            attempts=min(MAX_ATTEMPTS, max(1, attempts)),
            delay_seconds=min(MAX_RETRY_DELAY, max(1.0, float(delay))),
        )

    def delay(self, failed_attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed: ``delaySeconds *
        2**(n-1)``, ±10 % jitter, at most ``MAX_RETRY_DELAY``."""
        base = min(MAX_RETRY_DELAY, self.delay_seconds * 2.0 ** (failed_attempt - 1))
        return min(MAX_RETRY_DELAY, base * (0.9 + 0.2 * rand()))


@dataclass(frozen=True, slots=True)
class Job:
    """One backup of one config to run."""

    config_id: str
    trigger: Trigger = "manual"
    attempt: int = 1
    max_attempts: int = 1
    run_request_id: str | None = None
    slot: datetime | None = None
    """The scheduled fire time this job is for."""
    not_before: float = 0.0
    """Monotonic time before which the job waits (retries, deferrals)."""

    @property
    def automatic(self) -> bool:
        """A scheduled run or its retry: held by a pause."""
        return self.trigger in ("schedule", "retry")


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    status: Literal["completed", "failed", "skipped", "deferred"]
    result: BackupResult | None = None
    reason: str | None = None
    retry: Job | None = None
    """The next attempt (a failed scheduled backup with attempts left)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A config that a manual run did not back up, and why (e.g. its lease is held elsewhere: ``config
    is already running on Office PC until 2025-01-07T14:35:00Z``)."""

    config_id: str
    config_name: str
    reason: str

    @property
    def title(self) -> str:
        return self.config_name or self.config_id


@dataclass(frozen=True, slots=True)
class ManualRun(RunResult):
    """A ``RunResult`` (the backups that ran) with the configs that were not started: they are not
    ``results`` (nothing ran, so nothing is recorded in ``state.json``), but the run is not ``ok``."""

    skipped: tuple[Skipped, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped and all(r.ok for r in self.results)


class Dispatcher:
    """The jobs waiting to run: at most one per config, *Back Up Now* requests first, then the
    others by readiness. Thread-safe; the caller runs one job at a time (``next_job`` /
    ``finished``)."""

    def __init__(
        self, scheduler: Scheduler, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.scheduler = scheduler
        self._mono = monotonic
        self._lock = threading.RLock()
        self._queue: dict[str, Job] = {}
        self._configs: dict[str, ConfigInfo] = {}
        self._seen_requests: dict[str, None] = {}
        self.current: Job | None = None

    def set_configs(self, configs: Sequence[ConfigInfo]) -> None:
        with self._lock:
            self._configs = {c.id: c for c in configs}
            self.scheduler.set_configs(configs)

    def config(self, config_id: str) -> ConfigInfo | None:
        with self._lock:
            return self._configs.get(config_id)

    @property
    def pending(self) -> list[Job]:
        with self._lock:
            return list(self._queue.values())

    def add(self, job: Job) -> bool:
        """Queue ``job``; it replaces a pending job of the same config unless that one is a
        request (a request is never dropped for an automatic run)."""
        with self._lock:
            pending = self._queue.get(job.config_id)
            if pending is not None and pending.trigger == "request" and job.trigger != "request":
                return False
            self._queue[job.config_id] = job
            return True

    def request(self, request: RunRequest) -> bool:
        """A *Back Up Now* request (socket or heartbeat); each request id is taken once."""
        with self._lock:
            if request.id in self._seen_requests:
                return False
            self._seen_requests[request.id] = None
            while len(self._seen_requests) > 1000:
                del self._seen_requests[next(iter(self._seen_requests))]
            return self.add(Job(request.config_id, trigger="request", run_request_id=request.id))

    def poll(self) -> Tick:
        """Ask the scheduler what is due and queue it."""
        tick = self.scheduler.tick()
        for due in tick.due:
            retry = RetrySettings.from_options(due.config.options.retry)
            self.add(
                Job(
                    due.config.id,
                    trigger="schedule",
                    max_attempts=retry.attempts,
                    slot=due.slot,
                )
            )
        return tick

    def next_job(self) -> tuple[Job, ConfigInfo | None] | None:
        """The job to run now (and its config, if known), or ``None``. Marks it current."""
        now = self._mono()
        paused = self.scheduler.paused
        with self._lock:
            if self.current is not None:
                return None
            ready = [
                j
                for j in self._queue.values()
                if j.not_before <= now and not (paused and j.automatic)
            ]
            if not ready:
                return None
            job = min(ready, key=lambda j: (j.trigger != "request", j.not_before))
            del self._queue[job.config_id]
            self.current = job
            return job, self._configs.get(job.config_id)

    def finished(self, outcome: Outcome) -> None:
        job = outcome.job
        if outcome.retry is None and outcome.status != "deferred" and job.slot is not None:
            self.scheduler.ran(job.config_id, job.slot)
        with self._lock:
            self.current = None
            if outcome.retry is not None:
                self.add(outcome.retry)
            elif outcome.status == "deferred":
                job = outcome.job
                if job.trigger == "request" and job.run_request_id:
                    # the heartbeat will list it again while it is pending
                    self._seen_requests.pop(job.run_request_id, None)
                self.add(replace(job, not_before=self._mono() + DEFER_DELAY))

    def wake_in(self) -> float | None:
        """Seconds until the next queued job is ready (0 when one is), ``None`` when none."""
        now = self._mono()
        paused = self.scheduler.paused
        with self._lock:
            times = [j.not_before for j in self._queue.values() if not (paused and j.automatic)]
        return max(0.0, min(times) - now) if times else None


# -- running one job ----------------------------------------------------------------------------------


class AgentPlane(ControlPlane, LeasePlane, Protocol):
    """The control plane of a scheduled or requested run (``ApiClient`` is one)."""

    def heartbeat(
        self, *, version: str, platform: str, timezone: str | None = None
    ) -> Heartbeat: ...

    def start_backup(
        self,
        *,
        config_id: str,
        filename: str,
        filesize: int,
        multipart: bool = False,
        size: int | None = None,
        sha256: str | None = None,
        trigger: str | None = None,
        attempt: int | None = None,
        max_attempts: int | None = None,
        run_request_id: str | None = None,
        part_checksum: str | None = None,
    ) -> StartResponse: ...


class _TaggedPlane:
    """The engine's ``ControlPlane`` for one job: ``backup/start`` carries the job's trigger and
    attempt, and the log id it opens is kept for the progress events."""

    def __init__(self, plane: AgentPlane, job: Job) -> None:
        self._plane = plane
        self._job = job
        self.log_id: str | None = None
        self.on_open: Callable[[str], None] | None = None
        """Called (on the engine's thread, before any byte is uploaded) when the server has opened
        the log of the upload; not for the log the engine opens only to record a failure."""

    def heartbeat(self, *, version: str, platform: str) -> Heartbeat:
        return self._plane.heartbeat(version=version, platform=platform)

    @property
    def server_features(self) -> frozenset[str] | None:
        """The features the server listed in its last heartbeat (for the uploader's part checksum)."""
        return getattr(self._plane, "server_features", None)

    def list_configs(self) -> list[ConfigInfo]:
        return self._plane.list_configs()

    def start_backup(
        self,
        *,
        config_id: str,
        filename: str,
        filesize: int,
        multipart: bool = False,
        size: int | None = None,
        sha256: str | None = None,
        part_checksum: str | None = None,
    ) -> StartResponse:
        job = self._job
        response = self._plane.start_backup(
            config_id=config_id,
            filename=filename,
            filesize=filesize,
            multipart=multipart,
            size=size,
            sha256=sha256,
            trigger=job.trigger,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            run_request_id=job.run_request_id,
            part_checksum=part_checksum,
        )
        self.log_id = response.log_id
        # The uploader's start carries ``multipart`` or the exact size and SHA-256; the engine's
        # start for a failure before the upload carries neither.
        if self.on_open is not None and (multipart or sha256 is not None):
            self.on_open(response.log_id)
        return response

    def part_url(
        self,
        *,
        log_id: str,
        part_number: int,
        size: int,
        sha256: str | None = None,
        crc32: str | None = None,
    ) -> PartTicket:
        return self._plane.part_url(
            log_id=log_id, part_number=part_number, size=size, sha256=sha256, crc32=crc32
        )

    def complete_upload(self, *, log_id: str, parts: Sequence[UploadedPart]) -> int:
        return self._plane.complete_upload(log_id=log_id, parts=parts)

    def abort_upload(self, *, log_id: str, reason: str) -> None:
        self._plane.abort_upload(log_id=log_id, reason=reason)

    def complete_backup(
        self,
        *,
        log_id: str,
        status: str,
        files_processed: int,
        bytes_transferred: int,
        duration_ms: int,
        errors: Sequence[Mapping[str, str]] = (),
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> str:
        return self._plane.complete_backup(
            log_id=log_id,
            status=status,
            files_processed=files_processed,
            bytes_transferred=bytes_transferred,
            duration_ms=duration_ms,
            errors=errors,
            size=size,
            sha256=sha256,
            error=error,
        )

    def send_log(self, level: str, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._plane.send_log(level, message, metadata)


class _LeaseKeeper:
    """Renews a lease every ``ttl/3`` on a thread; a lost lease cancels the backup."""

    def __init__(
        self,
        plane: LeasePlane,
        config_id: str,
        lease: Lease,
        ttl: int,
        cancel: CancelToken,
        every: float | None = None,
    ) -> None:
        self._plane = plane
        self.config_id = config_id
        self.lease = lease
        self._ttl = ttl
        self._every = every if every is not None else ttl / 3
        self._cancel = cancel
        self._stop = threading.Event()
        self.renewals = 0
        self._thread = threading.Thread(target=self._run, name="backapp-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.lease = self._plane.renew_lease(self.config_id, self.lease.token, self._ttl)
                self.renewals += 1
            except ConflictError as exc:
                log.error("lost the run lease of config %s: %s", self.config_id, exc.detail)
                self._cancel.cancel(f"stopped: the run lease was lost ({exc.detail})")
                return
            except AgentError as exc:  # the server is unreachable: keep trying until it lapses
                log.warning("could not renew the run lease of %s: %s", self.config_id, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def release(self) -> None:
        self.stop()
        try:
            self._plane.release_lease(self.config_id, self.lease.token)
        except AgentError as exc:  # it lapses on its own
            log.warning("could not release the run lease of %s: %s", self.config_id, exc)


class ProgressReporter:
    """An ``EventSink`` that turns engine events into live-progress messages (``docs/agent-api.md``)
    and sends the latest at most once per ``interval`` seconds, from its own thread (the engine never
    waits on the network for it). Before the server has opened the log, progress is sent by
    ``config_id`` (the scan; a small archive being built) when one is given, which the caller does
    only for a server that advertises ``progress-by-config``; otherwise (or in another phase) what
    happened until then is kept, and ``flush`` sends it under the log id the moment the log opens."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        log_id: Callable[[], str | None],
        *,
        config_id: str | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._log_id = log_id
        self._config_id = config_id
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state: dict[str, Any] = {
            "phase": "scanning",
            "filesDone": 0,
            "filesTotal": 0,
            "bytesDone": 0,
            "bytesTotal": 0,
            "rate": 0.0,
            "eta": None,
        }
        self._dirty = False
        self._force = False
        self._last = float("-inf")
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="backapp-progress", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            s, phase = self._state, self._state["phase"]
            match event:
                case ScanStarted():
                    s["phase"] = "scanning"
                case ScanProgress() | ScanFinished():
                    s.update(phase="scanning", filesTotal=event.files, bytesTotal=event.bytes)
                case ArchiveProgress():
                    done = event.files_done >= event.files_total and (
                        event.bytes_done >= event.bytes_total
                    )
                    s.update(
                        phase="uploading" if done else "archiving",
                        filesDone=event.files_done,
                        filesTotal=event.files_total,
                        bytesDone=event.bytes_done,
                        bytesTotal=event.bytes_total,
                        rate=round(event.rate, 1),
                        eta=round(event.eta, 1) if event.eta is not None else None,
                    )
                case UploadProgress():
                    if s["phase"] == "uploading":
                        s["rate"] = round(event.rate, 1)
                case BackupFinished() | BackupFailed():
                    self._stop.set()
                case _:
                    return
            self._dirty = True
            self._force = self._force or s["phase"] != phase
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            left = self._last + self._interval - self._clock()
            if left > 0 and not self._force:
                self._stop.wait(left)  # ``_wake`` stays set: send when the interval is over
                continue
            log_id = self._log_id()
            with self._lock:
                if log_id is not None:
                    ref = {"logId": log_id}
                elif self._config_id is not None and self._state["phase"] in PRE_LOG_PHASES:
                    ref = {"configId": self._config_id}
                else:  # the server has not opened the log yet, and cannot take it by config
                    ref = None
            if ref is None:
                self._stop.wait(min(self._interval, 0.25))
                continue
            with self._lock:
                self._wake.clear()
                if not self._dirty:
                    continue
                payload = {**ref, **self._state}
                self._dirty = self._force = False
            if log_id is None and self._log_id() is not None:
                continue  # the log opened meanwhile: ``flush`` sends this state under its id
            self._last = self._clock()
            try:
                self._send(payload)
            except Exception as exc:  # progress is best effort
                log.debug("could not send progress: %s", exc)
                continue
            with self._lock:
                self.sent += 1

    def flush(
        self, send: Callable[[dict[str, Any]], None] | None = None, *, timeout: float = 2.0
    ) -> bool:
        """Send the latest state now through ``send`` (default: the reporter's own), if the log is
        open, waiting for it at most ``timeout`` seconds (a slow or rate-limited server must not hold
        the backup up; the send then finishes in the background). The runner calls it as the log
        opens, before the upload begins, so that the server has the progress so far (the scan, and
        for an archive under the multipart threshold all of its archiving) while the backup is
        still running, whatever the interval. Best effort: ``True`` when it was sent in time."""
        log_id = self._log_id()
        if log_id is None:
            return False
        with self._lock:
            payload = {"logId": log_id, **self._state}
            self._dirty = self._force = False
            self._last = self._clock()
        done = threading.Event()
        ok: list[bool] = []

        def work() -> None:
            try:
                (send or self._send)(payload)
            except Exception as exc:  # progress is best effort
                log.debug("could not send progress: %s", exc)
            else:
                with self._lock:
                    self.sent += 1
                ok.append(True)
            finally:
                done.set()

        threading.Thread(target=work, name="backapp-progress-flush", daemon=True).start()
        return done.wait(timeout) and bool(ok)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)


def _fan_out(*sinks: EventSink | None) -> EventSink:
    live = [s for s in sinks if s is not None]

    def sink(event: Event) -> None:
        for s in live:
            s(event)

    return sink


EngineFactory = Callable[[ControlPlane, EventSink], BackupEngine]


class Runner:
    """Runs jobs, one at a time: lease, engine, progress, retry decision (see the module doc)."""

    def __init__(
        self,
        plane: AgentPlane,
        make_engine: EngineFactory,
        *,
        events: EventSink | None = None,
        socket: AgentSocket | None = None,
        state: StateStore | None = None,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        renew_every: float | None = None,
        progress_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.plane = plane
        self._make_engine = make_engine
        self._events = events
        self.socket = socket
        self._state = state
        self.lease_ttl = lease_ttl
        self._renew_every = renew_every
        """Seconds between renewals (default ``lease_ttl / 3``)."""
        self._progress_interval = progress_interval
        self._mono = monotonic
        self._rand = rand
        self.keeper: _LeaseKeeper | None = None
        """The lease keeper of the current (or last) job."""
        self.version = __version__
        self.platform = sys.platform
        """What ``run_manual``'s heartbeats report."""
        self.temp_dir: Path | None = None
        """The engine's scratch folder, removed by ``run_manual`` when it is left empty."""
        self._owned: list[ApiClient | HttpStorage] = []
        self.server_features: frozenset[str] | None = None
        """The ``features`` of the server's last heartbeat answer (``None``: not seen yet)."""

    @classmethod
    def from_settings(
        cls,
        settings: AgentSettings,
        api_key: str,
        *,
        events: EventSink | None = None,
        socket: AgentSocket | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> Runner:
        """A runner talking to ``settings.server_url`` with ``api_key``, with the real engine (the
        lease-taking counterpart of ``BackupEngine.from_settings``). Close it when done."""
        if not settings.server_url:
            raise ConfigurationError(
                "no server URL: run `backapp-agent configure --server URL` first"
            )
        agent = f"backapp-agent/{__version__}"
        plane = ApiClient(settings.server_url, api_key, transport=transport, user_agent=agent)
        storage = HttpStorage(transport=transport, user_agent=agent)
        options = EngineOptions.from_settings(settings)

        def make_engine(control: ControlPlane, sink: EventSink) -> BackupEngine:
            return BackupEngine(control, storage, options, events=sink)

        runner = cls(plane, make_engine, events=events, socket=socket)
        runner.version, runner.platform = options.version, options.platform
        runner.temp_dir = options.temp_dir
        runner._owned = [plane, storage]
        return runner

    def close(self) -> None:
        for client in self._owned:
            client.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _features(self) -> frozenset[str]:
        """What the server advertised in its last heartbeat; a runner that has not seen one yet
        (the tray's per-job runner) asks once. Unknown (server unreachable) counts as none."""
        if self.server_features is None:
            try:
                beat = self.plane.heartbeat(version=self.version, platform=self.platform)
            except AgentError as exc:
                log.debug("could not ask the server's features: %s", exc)
                return frozenset()
            self.server_features = frozenset(beat.features)
        return self.server_features

    def _send_progress(self, payload: dict[str, Any]) -> None:
        if self.socket is not None and self.socket.send({"type": "progress", **payload}):
            return
        self.plane.send_progress(payload)

    def _lookup(self, config_id: str) -> ConfigInfo | None:
        for config in self.plane.list_configs():
            if config.id == config_id:
                return config
        return None

    def run(self, job: Job, config: ConfigInfo | None, cancel: CancelToken) -> Outcome:
        """Run ``job`` (``config`` may be ``None`` when the agent's list is stale: it is fetched)."""
        try:
            config = config if config is not None else self._lookup(job.config_id)
        except AgentError as exc:
            log.warning("cannot start the backup of %s: %s", job.config_id, exc)
            return Outcome(job, "deferred", reason=str(exc))
        if config is None:
            log.warning("config %s is not assigned to this agent; not backing it up", job.config_id)
            return Outcome(job, "skipped", reason="not assigned to this agent")
        name = config.name or config.id
        if cancel.is_set():
            return Outcome(job, "skipped", reason=cancel.reason)
        try:
            lease = self.plane.acquire_lease(config.id, self.lease_ttl)
        except ConflictError as exc:
            log.warning("%s: not started, already running elsewhere: %s", name, exc.detail)
            return Outcome(job, "skipped", reason=exc.detail)
        except NotFoundError as exc:
            log.warning("%s: not started: %s", name, exc.detail)
            return Outcome(job, "skipped", reason=exc.detail)
        except AgentError as exc:
            log.warning("%s: cannot take the run lease: %s", name, exc)
            return Outcome(job, "deferred", reason=str(exc))
        what = {
            "schedule": "scheduled backup",
            "retry": f"retry {job.attempt} of {job.max_attempts}",
            "request": "Back Up Now (requested from the web)",
            "manual": "backup",
        }[job.trigger]
        log.info("%s: starting the %s", name, what)
        keeper = self.keeper = _LeaseKeeper(
            self.plane, config.id, lease, self.lease_ttl, cancel, self._renew_every
        )
        keeper.start()
        tagged = _TaggedPlane(self.plane, job)
        reporter = ProgressReporter(
            self._send_progress,
            lambda: tagged.log_id,
            config_id=config.id if PROGRESS_BY_CONFIG in self._features() else None,
            interval=self._progress_interval,
        )

        def log_opened(log_id: str) -> None:
            # Over HTTP, not the socket: stored on the log before the first byte is uploaded.
            reporter.flush(self.plane.send_progress)

        tagged.on_open = log_opened
        try:
            engine = self._make_engine(tagged, _fan_out(reporter, self._events))
            try:
                result = engine.backup(config, cancel=cancel)
            finally:
                engine.close()
        finally:
            reporter.close()
            keeper.release()
        if self._state is not None:
            try:
                self._state.record(RunResult((result,)))
            except OSError as exc:
                log.warning("could not save the local state: %s", exc)
        if result.ok:
            return Outcome(job, "completed", result)
        retry: Job | None = None
        if job.automatic and job.attempt < job.max_attempts and not cancel.is_set():
            settings = RetrySettings.from_options(config.options.retry)
            delay = settings.delay(job.attempt, self._rand)
            retry = replace(
                job, trigger="retry", attempt=job.attempt + 1, not_before=self._mono() + delay
            )
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %s",
                name,
                job.attempt,
                job.max_attempts,
                result.error,
                timedelta(seconds=round(delay)),
            )
        return Outcome(job, "failed", result, reason=result.error, retry=retry)

    def run_manual(
        self, config_ids: Sequence[str] | None = None, cancel: CancelToken | None = None
    ) -> ManualRun:
        """``backapp-agent run`` and the tray's *Back Up Now*: heartbeat, fetch the configs (all, or
        ``config_ids``), back each up through ``run`` (trigger ``manual``: the lease, progress to the
        server), final heartbeat; the same events and results as ``BackupEngine.run``. A config that
        could not be started because another runner holds its lease (or it was unassigned
        meanwhile) is in ``skipped``; one whose lease could not be asked for (server unreachable)
        is a failed result. Never raises for a failed config."""
        cancel = cancel or CancelToken()
        emit: EventSink = self._events or (lambda event: None)
        try:
            beat = self.plane.heartbeat(version=self.version, platform=self.platform)
            self.server_features = frozenset(beat.features)
            configs = self.plane.list_configs()
        except AgentError as exc:
            emit(RunFinished(completed=0, failed=0, error=str(exc)))
            return ManualRun((), error=str(exc))
        configs, results = select_configs(configs, config_ids)
        emit(RunStarted(configs=len(configs)))
        skipped: list[Skipped] = []
        for config in configs:
            if cancel.is_set():
                error = f"{cancel.reason} before it started"
                results.append(_not_started(config, error))
                continue
            outcome = self.run(Job(config.id, trigger="manual"), config, cancel)
            if outcome.result is not None:
                results.append(outcome.result)
            elif outcome.status == "deferred":
                error = f"not started: cannot take the run lease: {outcome.reason}"
                results.append(_not_started(config, error))
            elif cancel.is_set():
                results.append(_not_started(config, f"{cancel.reason} before it started"))
            else:
                skipped.append(Skipped(config.id, config.name, outcome.reason or "not started"))
        try:
            self.plane.heartbeat(version=self.version, platform=self.platform)
        except AgentError as exc:
            log.warning("final heartbeat failed: %s", exc)
        if self.temp_dir is not None:
            try:
                self.temp_dir.rmdir()  # only if empty: it may be shared
            except OSError:
                pass
        completed = sum(r.ok for r in results)
        emit(RunFinished(completed=completed, failed=len(results) - completed))
        return ManualRun(tuple(results), skipped=tuple(skipped))


def _not_started(config: ConfigInfo, error: str) -> BackupResult:
    return BackupResult(config_id=config.id, config_name=config.name, status="failed", error=error)


# -- the headless loop ------------------------------------------------------------------------------


class AgentService:
    """``backapp-agent daemon``: heartbeat every ``pollInterval`` (sending the time zone, taking the
    pending run requests), the socket for *Back Up Now* within seconds, the scheduler every ``tick``
    seconds, and one job at a time on a worker thread. ``run`` blocks until ``stop``."""

    def __init__(
        self,
        plane: AgentPlane,
        runner: Runner,
        dispatcher: Dispatcher,
        *,
        version: str,
        platform: str,
        poll_interval: float = 30.0,
        tick: float = 15.0,
        socket: AgentSocket | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = plane
        self.runner = runner
        self.dispatcher = dispatcher
        self.version = version
        self.platform = platform
        self.poll_interval = poll_interval
        self.tick = tick
        self.socket = socket
        self._mono = monotonic
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._cancel: CancelToken | None = None
        self.online: bool | None = None
        self.outcomes: deque[Outcome] = deque(maxlen=100)
        """The latest jobs' outcomes, newest last."""

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def on_run_request(self, request: RunRequest) -> None:
        """From the socket (any thread)."""
        if self.dispatcher.request(request):
            self._wake.set()

    def stop(self, reason: str = "agent stopped") -> None:
        """Leave ``run``: cancel the running backup (the engine marks it failed and the runner
        releases the lease)."""
        self._stopping.set()
        cancel = self._cancel
        if cancel is not None:
            cancel.cancel(reason)
        self._wake.set()

    def beat(self) -> None:
        try:
            beat = self.plane.heartbeat(
                version=self.version,
                platform=self.platform,
                timezone=self.dispatcher.scheduler.timezone_name,
            )
            configs = self.plane.list_configs()
        except AgentError as exc:
            if self.online is not False:
                log.warning("cannot reach the server: %s", exc)
            self.online = False
            return
        if self.online is False:
            log.info("the server answers again")
        self.online = True
        if beat.poll_interval:
            self.poll_interval = float(max(1, beat.poll_interval))
        self.runner.server_features = frozenset(beat.features)
        self.dispatcher.set_configs(configs)
        for request in beat.run_requests:
            if self.dispatcher.request(request):
                log.info("Back Up Now requested for config %s (heartbeat)", request.config_id)

    def run(self) -> None:
        if self.socket is not None:
            self.socket.start()
        next_beat = 0.0
        try:
            while not self._stopping.is_set():
                if self._mono() >= next_beat:
                    self.beat()
                    next_beat = self._mono() + self.poll_interval
                tick = self.dispatcher.poll()
                if tick.jump > 0:  # woke up: talk to the server now
                    next_beat = 0.0
                    continue
                self._start_next()
                waits = [self.tick, next_beat - self._mono()]
                ready = self.dispatcher.wake_in()
                if ready is not None and self._worker is None:
                    waits.append(ready)
                self._wake.wait(max(0.05, min(waits)))
                self._wake.clear()
        finally:
            self._stopping.set()
            cancel = self._cancel
            if cancel is not None and not cancel.is_set():
                cancel.cancel("agent stopped")
            if self._worker is not None:
                self._worker.join()
            if self.socket is not None:
                self.socket.stop()

    def _start_next(self) -> None:
        if self._worker is not None:
            if self._worker.is_alive():
                return
            self._worker = None
        picked = self.dispatcher.next_job()
        if picked is None:
            return
        job, config = picked
        cancel = self._cancel = CancelToken()

        def work() -> None:
            try:
                outcome = self.runner.run(job, config, cancel)
            except Exception as exc:  # a bug costs this job, not the daemon
                log.exception("the backup job of %s failed", job.config_id)
                outcome = Outcome(job, "failed", reason=f"internal error: {exc}")
            self.outcomes.append(outcome)
            self.dispatcher.finished(outcome)
            self._cancel = None
            self._wake.set()

        self._worker = threading.Thread(target=work, name="backapp-job", daemon=True)
        self._worker.start()
