"""The run queue: the jobs waiting to run, and the retry policy of a failed scheduled backup.

``Dispatcher`` keeps the queue of jobs (at most one pending per config; *Back Up Now* first) and
the jobs running (up to ``parallel``, never two of one config), with retries waiting for their time (``options.retry``: attempts counting the first, delay doubling,
jittered, bounded; see ``RetrySettings``). Thread-safe.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from .._settings import MAX_PARALLEL_BACKUPS
from ..protocol import BackupResult, ConfigInfo, RunRequest
from .scheduler import Scheduler, Tick

__all__ = [
    "DEFER_DELAY",
    "MAX_ATTEMPTS",
    "MAX_RETRY_DELAY",
    "Dispatcher",
    "Job",
    "Outcome",
    "RetrySettings",
    "Trigger",
    "parallel_backups",
]

log = logging.getLogger("desktop_agent.engine.scheduler")

#: Bounds of ``options.retry``.
MAX_ATTEMPTS = 10
MAX_RETRY_DELAY = 6 * 3600.0
#: A job that could not start (server unreachable) is tried again after this long.
DEFER_DELAY = 30.0

Trigger = Literal["manual", "schedule", "retry", "request"]


def parallel_backups(server: object, local: int) -> int:
    """How many configs to back up at once: the web console's ``parallelBackups`` (a heartbeat's
    ``parallelBackups``) when it sets one, else the machine's own (``local``). The owner manages
    the fleet from the console, so its value replaces the machine's rather than capping it; one
    outside 1-4 (a newer server's idea) is ignored with a warning."""
    if server is None:
        return local
    if isinstance(server, int) and not isinstance(server, bool):
        if 1 <= server <= MAX_PARALLEL_BACKUPS:
            return server
    log.warning(
        "the server asked for %.20r parallel backups; keeping %d (1-%d are possible)",
        server,
        local,
        MAX_PARALLEL_BACKUPS,
    )
    return local


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
    status: Literal["completed", "failed", "cancelled", "skipped", "deferred"]
    result: BackupResult | None = None
    reason: str | None = None
    retry: Job | None = None
    """The next attempt (a failed scheduled backup with attempts left)."""


class Dispatcher:
    """The jobs waiting to run: at most one per config, *Back Up Now* requests first, then the
    others by readiness. Thread-safe; up to ``parallel`` jobs run at once (``next_job`` /
    ``finished``), each of another config: a config's next job waits while one of it runs."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        parallel: int = 1,
    ) -> None:
        self.scheduler = scheduler
        self._mono = monotonic
        self._lock = threading.RLock()
        self._queue: dict[str, Job] = {}
        self._configs: dict[str, ConfigInfo] = {}
        self._seen_requests: dict[str, None] = {}
        self._running: dict[str, Job] = {}
        self.parallel = parallel
        """How many jobs may run at once (the agent's ``parallelBackups``)."""

    @property
    def running(self) -> list[Job]:
        """The jobs started and not finished, oldest first."""
        with self._lock:
            return list(self._running.values())

    @property
    def current(self) -> Job | None:
        """The oldest running job (``None``: none runs)."""
        with self._lock:
            return next(iter(self._running.values()), None)

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
            if len(self._running) >= max(1, self.parallel):
                return None
            ready = [
                j
                for j in self._queue.values()
                if j.not_before <= now
                and not (paused and j.automatic)
                and j.config_id not in self._running
            ]
            if not ready:
                return None
            job = min(ready, key=lambda j: (j.trigger != "request", j.not_before))
            del self._queue[job.config_id]
            self._running[job.config_id] = job
            return job, self._configs.get(job.config_id)

    def finished(self, outcome: Outcome) -> None:
        job = outcome.job
        if outcome.retry is None and outcome.status != "deferred" and job.slot is not None:
            self.scheduler.ran(job.config_id, job.slot)
        with self._lock:
            if self._running.get(job.config_id) is job:
                del self._running[job.config_id]
            if outcome.status == "skipped" and job.trigger == "request" and job.run_request_id:
                # Not run (its lease was busy): the request stays pending on the server, whose
                # next heartbeat lists it again; taken as handled, it would block Back Up Now
                # ("already pending") until it expires.
                self._seen_requests.pop(job.run_request_id, None)
            if outcome.retry is not None:
                self.add(outcome.retry)
            elif outcome.status == "deferred":
                job = outcome.job
                if job.trigger == "request" and job.run_request_id:
                    # the heartbeat will list it again while it is pending
                    self._seen_requests.pop(job.run_request_id, None)
                self.add(replace(job, not_before=self._mono() + DEFER_DELAY))

    def wake_in(self) -> float | None:
        """Seconds until the next queued job is ready (0 when one is), ``None`` when none (a job
        whose config is running waits for ``finished``, not for a time)."""
        now = self._mono()
        paused = self.scheduler.paused
        with self._lock:
            times = [
                j.not_before
                for j in self._queue.values()
                if not (paused and j.automatic) and j.config_id not in self._running
            ]
        return max(0.0, min(times) - now) if times else None
