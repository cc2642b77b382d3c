"""The server's periodic work: maintenance (retention, then pruning), alerts (evaluation and delivery), server-side runs, the catalog (copies of the database into the bucket).

Every ``BACKAPP_TASK_INTERVAL`` seconds each process tries each task; a lock named ``server:{task}``
makes sure only one process does a given task at a time (the others skip it this round). On
PostgreSQL the lock is a session advisory lock held while the round runs; on SQLite it is a lease,
renewed while the round runs. Either way it is released when the round ends, so a round longer than
its interval never overlaps with itself on another process, and a dead process frees it (at once on
PostgreSQL, within the lease's lifetime on SQLite).

Maintenance, alerts, housekeeping and the catalog run on a thread of their own
(:mod:`backend.services.round_thread`), never on the loop that serves requests. Server-side backups
are started from the server's loop; they take the ``config:{id}`` lease of the config they run, like
agents do, and run in the background so a long backup never delays retention or alerts.

Each task is a method taking ``now``, so tests drive them with a controllable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from backend.accounts.tables import LoginThrottle, UserSession
from backend.agents.tables import Agent, PairingCode
from backend.backups.tables import Alert, Lease, RunRequest
from backend.services.alerts import AlertReport, AlertService
from backend.services.catalog.service import CatalogRound, CatalogService
from backend.services.clock import utcnow
from backend.services.compaction import CompactionRound, CompactionService
from backend.services.leases import SERVER_OWNER, LeaseService
from backend.services.offline import mark_offline
from backend.services.orphans import OrphanSweeper
from backend.services.prune import PruneReport, PruneService
from backend.services.pubsub import SERVER_CHANNEL, LiveEvents, decode
from backend.services.restore_jobs import expire_stale_jobs
from backend.services.retention import RetentionReport, RetentionService
from backend.services.round_thread import RoundThread, advisory_lock, rounds_can_leave_loop
from backend.services.runs import REQUEST_TTL
from backend.services.server_side import ServerRunner
from backend.settings import Settings
from backend.storage import Storage

__all__ = ["MaintenanceReport", "PeriodicTasks"]

log = logging.getLogger("backapp.tasks")


@dataclass(frozen=True)
class Housekeeping:
    """How many rows one housekeeping round removed (or expired)."""

    throttles: int
    sessions: int
    leases: int
    requests: int
    interrupted: int = 0
    """Running backups whose runner died (their lease is gone), now ``interrupted``."""
    uploads_aborted: int = 0
    """Multipart uploads of dead or finished runs, aborted in storage."""
    pairing_codes: int = 0
    """Pairing codes (used or not) whose life ended more than ``PAIRING_CODE_KEPT`` ago."""
    restores: int = 0
    """Web restores no machine took within their day, now ``expired``."""


@dataclass
class PresenceReport:
    """One presence round: the agents it marked offline, whether more are left to mark (the
    next rounds do them), and how many went offline since the previous round (told to pages)."""

    marked: int
    more: bool
    told: int = 0


PAIRING_CODE_KEPT = timedelta(days=1)
"""How long a pairing code's row outlives its expiry: meanwhile presenting it again is answered
*already used* or *expired* rather than *no such code*."""


@dataclass
class MaintenanceReport:
    """One maintenance round: what retention expired, then what pruning deleted."""

    retention: RetentionReport
    prune: PruneReport
    compaction: CompactionRound = field(default_factory=CompactionRound)

    @property
    def bytes_freed(self) -> int:
        """Archives deleted plus repository objects deleted."""
        return self.retention.archive_bytes + self.prune.bytes_freed


def default_holder() -> str:
    return f"server {socket.gethostname()} pid {os.getpid()}"


class PeriodicTasks:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        leases: LeaseService | None = None,
        alerts: AlertService | None = None,
        holder: str | None = None,
        live: LiveEvents | None = None,
        sweeper: OrphanSweeper | None = None,
    ) -> None:
        self.settings = settings
        self.leases = leases or LeaseService()
        self.holder = holder or default_holder()
        self.retention = RetentionService(
            storage, timezone=settings.timezone, budget_seconds=settings.round_budget_seconds
        )
        self.prune = PruneService(storage, grace_seconds=settings.prune_grace_seconds)
        self.compaction = CompactionService(settings)
        self.alerts = alerts or AlertService(settings)
        self.live = live
        self.sweeper = sweeper or OrphanSweeper(storage, live)
        self.runner = ServerRunner(settings, storage, self.leases, self.holder, live=live)
        self.catalog = CatalogService(settings, storage)
        self._wake = asyncio.Event()
        self._first_round = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._thread: RoundThread | None = None
        self._presence_at: datetime | None = None
        self.rounds = 0
        """Rounds the background loop has finished (tests wait for the start-up round)."""
        self.drain = False
        """Retention rounds follow each other until the backlog is done, whatever their budget
        (``backapp maintenance run``: one command does everything due)."""

    @property
    def lease_ttl(self) -> float:
        # Long enough for one task's work; a crashed holder frees it within this.
        return max(60.0, 5 * self.settings.task_interval)

    async def _guarded(self, task: str, fn: Callable[[], Awaitable[Any]]) -> Any | None:
        """Run ``fn`` if this process wins ``server:{task}``; None when another process has it."""
        name = f"server:{task}"
        engine = Lease._meta.db
        if isinstance(engine, PostgresEngine):
            async with advisory_lock(engine.config["dsn"], name) as held:
                return await fn() if held else None
        grant = await self.leases.acquire(name, self.holder, self.lease_ttl, owner=SERVER_OWNER)
        if grant is None:
            return None
        renewer = asyncio.get_running_loop().create_task(self._renew(name, grant.token))
        try:
            return await fn()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self.leases.release(name, grant.token)

    async def _renew(self, name: str, token: str) -> None:
        """Keep a task's lease while it runs (at a third of its lifetime), however long the round
        takes: another process must not start the same task meanwhile. The lease still lapses
        within its TTL when this process dies."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if await self.leases.renew(name, token, self.lease_ttl) is None:
                    log.warning("lost the lease %s while running it", name)
                    return
            except Exception:
                log.exception("renewing the lease %s failed; trying again", name)

    async def run_retention(self, now: datetime | None = None) -> RetentionReport | None:
        return await self._guarded("retention", lambda: self.retention.run(now or utcnow()))

    async def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        """Retention, then pruning (so the snapshots it expires lose their packs in the same
        round), then compaction: ask the agents whose snapshots were pruned to compact, and count
        the compactions committed since the last round. Retention does one bounded round, or
        rounds until nothing is left when ``drain`` is set. Unguarded: callers hold
        ``server:retention`` (``run_maintenance`` does)."""
        retention = await self.retention.run(now)
        while self.drain and retention.more:
            retention.merge(await self.retention.run(now))
        prune = await self.prune.run(now)
        compaction = await self.compaction.round(now or utcnow())
        return MaintenanceReport(retention, prune, compaction)

    async def run_maintenance(self, now: datetime | None = None) -> MaintenanceReport | None:
        """One maintenance round on this process, unless another process is doing one."""
        return await self._guarded("retention", lambda: self.maintain(now or utcnow()))

    async def run_alerts(self, now: datetime | None = None) -> AlertReport | None:
        async def both() -> AlertReport:
            moment = now or utcnow()
            report = await self.alerts.evaluate(moment)
            await self._announce_alerts(report.opened + report.resolved)
            sent = await self.alerts.notify(moment)
            report.notified, report.notify_failed = sent.notified, sent.notify_failed
            return report

        return await self._guarded("alerts", both)

    async def _announce_alerts(self, alert_ids: list[str]) -> None:
        """Tell the owners' open pages that alerts opened or resolved (``{"type": "alert"}``):
        their live regions reload then, and only then."""
        if self.live is None or not alert_ids:
            return
        users: set[str] = set()
        for start in range(0, len(alert_ids), 500):
            chunk = alert_ids[start : start + 500]
            rows = await Alert.select(Alert.user).where(Alert.id.is_in(chunk)).distinct()
            users.update(str(r["user"]) for r in rows)
        for user in users:
            self.live.to_user(user, {"type": "alert"})

    async def run_presence(self, now: datetime | None = None) -> PresenceReport | None:
        """Store which agents are offline (a bounded round: a backlog of thousands, after an
        upgrade or an outage, is marked over several rounds; ``more`` says so), and tell the
        owners' open pages which agents went offline since the previous round
        (``{"type": "agent", "online": false}``): the last heartbeat crossed the offline
        threshold. (An agent coming back online is told by its heartbeat.)"""

        async def went_offline() -> PresenceReport:
            moment = now or utcnow()
            # Store it too: the dashboard ranks the configs of offline agents from their rows.
            marked = await mark_offline(moment, self.settings)
            report = PresenceReport(marked=len(marked.agents), more=marked.more)
            threshold = timedelta(seconds=self.settings.offline_after_seconds)
            since = self._presence_at or moment - timedelta(seconds=self.settings.task_interval)
            self._presence_at = moment
            if self.live is None or since >= moment:
                return report
            rows = await Agent.select(Agent.id, Agent.user).where(
                (Agent.last_seen >= since - threshold)
                & (Agent.last_seen < moment - threshold)
                & (Agent.active == True)  # noqa: E712 - a SQL comparison
            )
            for r in rows:
                self.live.to_user(
                    r["user"], {"type": "agent", "agentId": str(r["id"]), "online": False}
                )
            report.told = len(rows)
            return report

        return await self._guarded("presence", went_offline)

    async def run_housekeeping(self, now: datetime | None = None) -> Housekeeping | None:
        """Drop rows nobody needs any more: sign-in throttles whose window is over, expired
        sessions, leases lapsed for a day, pairing codes a day past their end, Back Up Now
        requests and web restores nobody started in time; and
        mark the backups whose runner died ``interrupted``, aborting their multipart uploads (and
        those that finished runs left behind). Each statement is bounded (set-based, or a batch
        of at most ``orphans.SWEEP_BATCH`` rows)."""

        async def sweep() -> Housekeeping:
            moment = now or utcnow()
            window = timedelta(seconds=self.settings.login_lockout_seconds)
            throttles = (
                await LoginThrottle.delete()
                .where(LoginThrottle.window_started < moment - window)
                .returning(LoginThrottle.id)
            )
            sessions = (
                await UserSession.delete()
                .where(UserSession.expires_at < moment)
                .returning(UserSession.id)
            )
            leases = (
                await Lease.delete()
                .where(Lease.expires_at < moment - timedelta(days=1))
                .returning(Lease.id)
            )
            requests = (
                await RunRequest.update({RunRequest.status: "expired"})
                .where(
                    (RunRequest.status == "pending")
                    & (RunRequest.requested_at < moment - REQUEST_TTL)
                )
                .returning(RunRequest.id)
            )
            codes = (
                await PairingCode.delete()
                .where(PairingCode.expires_at < moment - PAIRING_CODE_KEPT)
                .returning(PairingCode.id)
            )
            restores = await expire_stale_jobs(moment)
            # A lease that is not live (lapsed, whether or not its row is still there) means
            # nobody works on the run it guarded.
            orphans = await self.sweeper.sweep(moment)
            return Housekeeping(
                len(throttles),
                len(sessions),
                len(leases),
                len(requests),
                orphans.interrupted,
                orphans.aborted,
                len(codes),
                restores,
            )

        return await self._guarded("housekeeping", sweep)

    async def run_catalog(self, now: datetime | None = None) -> CatalogRound | None:
        """The catalog round on this process, unless another process is doing one: the metadata
        objects completions could not write, then a copy of the database when one is due (daily,
        and after migrations)."""
        return await self._guarded("catalog", lambda: self.catalog.run_round(now))

    async def run_server_side(self, now: datetime | None = None) -> list[asyncio.Task[None]]:
        """Start the server-side runs due now (in the background; ``runner.wait()`` awaits them)."""
        # ``now`` stays None in production: the runs then record real times as they go.
        started = await self._guarded("schedules", lambda: self.runner.tick(now))
        return started or []

    async def run_once(self, now: datetime | None = None) -> None:
        """One round of every task, here and now."""
        await self._run_each(
            now,
            ("maintenance", self.run_maintenance),
            ("alerts", self.run_alerts),
            ("server-side runs", self.run_server_side),
            ("housekeeping", self.run_housekeeping),
            ("presence", self.run_presence),
            ("catalog", self.run_catalog),
        )

    async def run_rounds(self, now: datetime | None = None) -> None:
        """One round of the tasks that run off the request loop: all but server-side runs."""
        await self._run_each(
            now,
            ("maintenance", self.run_maintenance),
            ("alerts", self.run_alerts),
            ("housekeeping", self.run_housekeeping),
            ("presence", self.run_presence),
            ("catalog", self.run_catalog),
        )

    @staticmethod
    async def _run_each(
        now: datetime | None, *tasks: tuple[str, Callable[[datetime | None], Awaitable[Any]]]
    ) -> None:
        for name, fn in tasks:
            try:
                await fn(now)
            except Exception:
                log.exception("periodic task %s failed; retrying next round", name)

    async def _loop(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while not stopping.is_set():
            if loop.time() >= next_round:
                if self._thread is None:
                    await self.run_rounds()
                try:
                    await self.run_server_side()
                except Exception:
                    log.exception("periodic task server-side runs failed; retrying next round")
                self.rounds += 1
                self._first_round.set()
                next_round = loop.time() + self.settings.task_interval
            elif self._wake.is_set():
                # A Back Up Now for a server-side config: start it now, not at the next round.
                self._wake.clear()
                try:
                    await self.run_server_side()
                except Exception:
                    log.exception("starting a requested server-side run failed")
            waiters = [loop.create_task(stopping.wait()), loop.create_task(self._wake.wait())]
            await asyncio.wait(
                waiters,
                timeout=max(0.0, next_round - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in waiters:
                waiter.cancel()

    async def _listen(self) -> None:
        """Wake the loop when a Back Up Now request for a server-side config is published (by
        whichever process took the click; through Redis when configured)."""
        assert self.live is not None
        try:
            async with self.live.subscription(SERVER_CHANNEL) as subscriber:
                async for payload in subscriber.iter_events():
                    event = decode(payload)
                    if event is not None and event.get("type") == "run":
                        self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("listening for server-side run requests failed; polling only")

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            if rounds_can_leave_loop():
                self._thread = RoundThread(self.run_rounds, self.settings.task_interval)
                self._thread.start()
            self._task = loop.create_task(self._loop(self._stopping))
            if self.live is not None:
                self._listener = loop.create_task(self._listen())

    @property
    def first_round_over(self) -> bool:
        """Whether the round at start-up has ended (on the loop and, if any, on the rounds'
        thread): what :meth:`started` waits for."""
        thread_done = self._thread is None or self._thread.first_round.is_set()
        return thread_done and (self._first_round.is_set() or self._task is None)

    async def started(self) -> None:
        """Wait until the background loop finished its first round (the one at start-up), and
        the rounds' thread its first round."""
        if self._thread is not None:
            await self._thread.wait_first_round()
        if self._task is None or self._task.done():
            return
        waiter = asyncio.get_running_loop().create_task(self._first_round.wait())
        await asyncio.wait([waiter, self._task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        if self._thread is not None:
            await self._thread.stop()
            self._thread = None
        await self.runner.stop()
