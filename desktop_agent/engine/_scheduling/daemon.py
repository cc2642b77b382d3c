"""The headless loop behind ``backapp-agent daemon``.

``AgentDaemon`` sends a heartbeat every ``pollInterval`` (with the time zone; it brings the configs
and the pending *Back Up Now* requests), listens on the socket, ticks the scheduler through the
``Dispatcher``, and runs its jobs on worker threads through the ``Runner``: up to the
dispatcher's ``parallel`` backups of different configs at once, each with its own lease and cancel
token. A restore or a drill runs alone (backups wait for it, and it waits for them). Compactions
and agent updates run only when nothing else runs or waits; an installed update stops the loop
with ``restart`` set, and the caller execs the new build.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .._cancel import CancelToken
from .._errors import AgentError
from .._transport.socket import AgentSocket
from ..protocol import ConfigInfo, Heartbeat, RunRequest
from .queue import Dispatcher, Job, Outcome, parallel_backups
from .restore_jobs import RestoreJobs
from .runner import AgentPlane, Runner

__all__ = ["AgentDaemon"]

log = logging.getLogger("desktop_agent.engine.scheduler")


class Drills(Protocol):
    """Restore drills (``RepoProofs``'s ``DrillDuty``): which config's is due, and running it."""

    def due(self, configs: Iterable[ConfigInfo]) -> ConfigInfo | None: ...

    def run(self, config: ConfigInfo) -> Any: ...


class Compactions(Protocol):
    """Compactions the server asks for (``CompactDuty``)."""

    def ask(self) -> None: ...

    def due(self) -> bool: ...

    def run(self) -> Any: ...


class Updates(Protocol):
    """Agent updates (``UpdateDuty``): told of each heartbeat, run at an idle moment."""

    def heard(self, beat: Heartbeat) -> None: ...

    def due(self) -> bool: ...

    def run(self) -> bool: ...

    def overdue(self) -> bool: ...


class AgentDaemon:
    """``backapp-agent daemon``: heartbeat every ``pollInterval`` (sending the time zone, taking the
    pending run requests), the socket for *Back Up Now* within seconds, the scheduler every ``tick``
    seconds, and the jobs on worker threads (see the module doc). ``run`` blocks until ``stop``."""

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
        restores: RestoreJobs | None = None,
        drills: Drills | None = None,
        compactions: Compactions | None = None,
        updates: Updates | None = None,
    ) -> None:
        self.plane = plane
        self.runner = runner
        self.dispatcher = dispatcher
        self.local_parallel = dispatcher.parallel
        """The machine's own ``parallelBackups`` (the web console's replaces it while set)."""
        self.version = version
        self.platform = platform
        self.poll_interval = poll_interval
        self.tick = tick
        self.socket = socket
        self.restores = restores
        """Restores asked for from the web console (None: this daemon does not take them)."""
        self.drills = drills
        """Restore drills, run when due and no backup is waiting."""
        self.compactions = compactions
        """Compactions of the repository, run when the server asks and nothing else waits."""
        self.updates = updates
        """Agent updates, installed when nothing else runs or waits."""
        self.restart = False
        """Set when ``run`` returned for an update: the caller restarts into the new build."""
        self._configs: list[ConfigInfo] = []
        self._mono = monotonic
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        """The restore or drill running (alone)."""
        self._cancel: CancelToken | None = None
        self._jobs: dict[str, tuple[threading.Thread, CancelToken]] = {}
        """The backups running, by config id."""
        self._jobs_lock = threading.Lock()
        self.online: bool | None = None
        self.outcomes: deque[Outcome] = deque(maxlen=100)
        """The latest jobs' outcomes, newest last."""

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> list[str]:
        """The ids of the configs being backed up now, in the order they started."""
        with self._jobs_lock:
            return list(self._jobs)

    def cancel(self, config_id: str, reason: str = "cancelled by the user") -> bool:
        """Stop one running backup (the others go on); ``False`` when it is not running."""
        with self._jobs_lock:
            job = self._jobs.get(config_id)
        if job is None:
            return False
        job[1].cancel(reason)
        return True

    def _cancel_all(self, reason: str) -> None:
        with self._jobs_lock:
            tokens = [cancel for _, cancel in self._jobs.values()]
        cancel = self._cancel
        for token in [*tokens, *([cancel] if cancel is not None else [])]:
            if not token.is_set():
                token.cancel(reason)

    def on_run_request(self, request: RunRequest) -> None:
        """From the socket (any thread)."""
        if self.dispatcher.request(request):
            self._wake.set()

    def on_restore_request(self, restore_id: str) -> None:
        """From the socket (any thread): a restore asked for from the web console."""
        if self.restores is not None and self.restores.add(restore_id):
            self._wake.set()

    def stop(self, reason: str = "agent stopped") -> None:
        """Leave ``run``: cancel the running backup (the engine records it as ``cancelled``: the
        agent was stopped on purpose; the runner releases the lease)."""
        self._stopping.set()
        self._cancel_all(reason)
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
        parallel = parallel_backups(beat.parallel_backups, self.local_parallel)
        if parallel != self.dispatcher.parallel:
            log.info("parallel backups: %d (was %d)", parallel, self.dispatcher.parallel)
            self.dispatcher.parallel = parallel
        self.dispatcher.set_configs(configs)
        self._configs = list(configs)
        for request in beat.run_requests:
            if self.dispatcher.request(request):
                log.info("Back Up Now requested for config %s (heartbeat)", request.config_id)
        if self.compactions is not None and beat.compact is not None:
            self.compactions.ask()
        if self.restores is not None:
            for restore_id in beat.restore_requests:
                if self.restores.add(restore_id):
                    log.info("restore %s requested from the web console (heartbeat)", restore_id)
        if self.updates is not None:
            self.updates.heard(beat)

    def run(self) -> None:
        if self.socket is not None:
            self.socket.start()
        next_beat = 0.0
        try:
            while not self._stopping.is_set():
                if self._mono() >= next_beat:
                    self.beat()
                    next_beat = self._mono() + self.poll_interval
                idle = self._worker is None and not self.running
                if self.updates is not None and idle and self.updates.overdue():
                    self._restart_for_update()  # a fresh update that never heartbeat: roll back
                    break
                tick = self.dispatcher.poll()
                if tick.jump > 0:  # woke up: talk to the server now
                    next_beat = 0.0
                    continue
                self._start_next()
                waits = [self.tick, next_beat - self._mono()]
                ready = self.dispatcher.wake_in()
                if ready is not None and self._worker is None and self._has_room():
                    waits.append(ready)
                self._wake.wait(max(0.05, min(waits)))
                self._wake.clear()
        finally:
            self._stopping.set()
            self._cancel_all("agent stopped")
            if self._worker is not None:
                self._worker.join()
            with self._jobs_lock:
                threads = [thread for thread, _ in self._jobs.values()]
            for thread in threads:
                thread.join()
            if self.socket is not None:
                self.socket.stop()

    def _has_room(self) -> bool:
        with self._jobs_lock:
            return len(self._jobs) < max(1, self.dispatcher.parallel)

    def _start_next(self) -> None:
        if self._worker is not None:
            if self._worker.is_alive():
                return
            self._worker = None
        with self._jobs_lock:
            busy = bool(self._jobs)
        if self.restores is not None and self.restores.pending:
            if not busy:  # a restore runs alone: it waits for the running backups
                self._start_restore(self.restores)
            return
        started = False
        while not self._stopping.is_set():
            picked = self.dispatcher.next_job()
            if picked is None:
                break
            self._start_job(*picked)
            started = True
        if not started and not busy and not self._start_drill() and not self._start_compaction():
            self._start_update()

    def _start_job(self, job: Job, config: ConfigInfo | None) -> None:
        cancel = CancelToken()

        def work() -> None:
            try:
                outcome = self.runner.run(job, config, cancel)
            except Exception as exc:  # a bug costs this job, not the daemon
                log.exception("the backup job of %s failed", job.config_id)
                outcome = Outcome(job, "failed", reason=f"internal error: {exc}")
            self.outcomes.append(outcome)
            with self._jobs_lock:
                self._jobs.pop(job.config_id, None)
            self.dispatcher.finished(outcome)
            self._say_running()
            self._wake.set()

        thread = threading.Thread(target=work, name=f"backapp-job-{job.config_id[:8]}", daemon=True)
        with self._jobs_lock:
            self._jobs[job.config_id] = (thread, cancel)
        thread.start()
        self._say_running()

    def _say_running(self) -> None:
        """Log which configs are being backed up, when more than one may be."""
        if self.dispatcher.parallel <= 1:
            return
        names = []
        for config_id in self.running:
            config = self.dispatcher.config(config_id)
            names.append(config.name or config_id if config is not None else config_id)
        log.info("backing up now: %s", ", ".join(names) if names else "nothing")

    def _start_restore(self, restores: RestoreJobs) -> None:
        """The next restore job on the worker thread (one job at a time, backups wait)."""
        cancel = self._cancel = CancelToken()

        def work() -> None:
            try:
                restores.run_next(cancel)
            finally:
                self._cancel = None

        self._on_worker("backapp-restore", "a restore job failed", work)

    def _start_drill(self) -> bool:
        """A due restore drill, on the worker thread (a backup asked for meanwhile waits for it:
        a drill reads a sample, so it is short)."""
        if self.drills is None or self._stopping.is_set():
            return False
        config = self.drills.due(self._configs)
        if config is None:
            return False
        drills = self.drills
        self._on_worker(
            "backapp-drill",
            f"the restore drill of {config.id} failed",
            lambda: drills.run(config),
        )
        return True

    def _start_compaction(self) -> bool:
        """The compaction the server asked for, on the worker thread (a backup asked for
        meanwhile waits for it; a backup running at the same time would be safe too: the
        server never deletes a pack a snapshot started with)."""
        compactions = self.compactions
        if compactions is None or self._stopping.is_set() or not compactions.due():
            return False
        self._on_worker("backapp-compact", "the compaction failed", compactions.run)
        return True

    def _start_update(self) -> None:
        """An update at this idle moment (nothing runs, nothing waits), on the worker thread: a
        backup asked for meanwhile waits for it. Installed, the daemon stops to restart."""
        updates = self.updates
        if updates is None or self._stopping.is_set() or not updates.due():
            return

        def work() -> None:
            if updates.run():
                self._restart_for_update()

        self._on_worker("backapp-update", "the agent update failed", work)

    def _on_worker(self, name: str, failure: str, work: Callable[[], object]) -> None:
        """Run one piece of idle-time work (a restore, drill, compaction or update) on the
        worker thread; a bug in it is logged as ``failure`` and costs that work, not the daemon.
        The loop wakes when it ends."""

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("%s", failure)
            self._wake.set()

        self._worker = threading.Thread(target=run, name=name, daemon=True)
        self._worker.start()

    def _restart_for_update(self) -> None:
        self.restart = True
        self.stop("agent restarting for an update")
