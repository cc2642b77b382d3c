"""Runs whose runner died: found by their lease, marked ``interrupted``, their uploads aborted.

A run's liveness is its lease. The runner (an agent, or a server process for server-side configs)
takes the config's lease before ``backup/start`` and renews it while it works; ``backup/start``
records the lease's token on the log (``lease_token``). A ``running`` log whose lease is gone (it
lapsed, was released, or was taken over by a restarted agent) has nobody working on it any more:
it becomes ``interrupted`` with the reason in words, and its multipart upload is aborted so that
storage frees the parts. A log with no lease (a runner that takes none) is given up after
``UNLEASED_AFTER`` without finishing.

This is done for one config at once when a new run of it takes the lease (so an immediate re-run
never leaves a ghost beside it), and for everything by the housekeeping task, in bounded batches.
The same task aborts multipart uploads that finished runs left behind (their abort failed while
storage was down).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from piccolo.custom_types import Combinable

from backend.backups.tables import BackupLog, Lease
from backend.services.clock import utcnow
from backend.services.last_backup import refresh_last_backups
from backend.services.pubsub import LiveEvents
from backend.storage import NoSuchUpload, ObjectStoreError, Storage

__all__ = [
    "AGENT_STOPPED",
    "SERVER_STOPPED",
    "SWEEP_BATCH",
    "TAKEN_OVER",
    "UNLEASED_AFTER",
    "UNLEASED_STOPPED",
    "OrphanSweeper",
    "SweepReport",
]

log = logging.getLogger("backapp.orphans")

SWEEP_BATCH = 200
"""At most this many runs (or uploads) per statement: a round's cost stays bounded whatever piled
up; the next round takes the rest."""
UNLEASED_AFTER = timedelta(hours=24)
"""A running log without a lease (its runner took none) is given up this long after it started."""

AGENT_STOPPED = (
    "The agent stopped before the backup finished (it was shut down, crashed or lost its "
    "connection to the server)."
)
SERVER_STOPPED = (
    "The server process running this backup stopped before it finished (it was restarted or "
    "crashed)."
)
TAKEN_OVER = "The agent was restarted before the backup finished; its new run took over."
UNLEASED_STOPPED = "No word from the agent for a day: the backup did not finish."

FINISHED_WITH_UPLOAD = ("failed", "interrupted", "cancelled")
"""Statuses whose multipart upload must be gone (a completed backup's was assembled)."""


@dataclass(frozen=True)
class SweepReport:
    interrupted: int
    aborted: int


class OrphanSweeper:
    """Marks dead runs ``interrupted`` and aborts uploads nobody will finish (module docstring)."""

    def __init__(self, storage: Storage, live: LiveEvents | None = None) -> None:
        self.storage = storage
        self.live = live

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """One housekeeping round: dead runs, then leftover uploads (each at most a batch)."""
        now = now or utcnow()
        interrupted = await self.interrupt_dead(now)
        aborted = await self.abort_leftover_uploads()
        return SweepReport(interrupted, aborted)

    async def interrupt_dead(
        self,
        now: datetime | None = None,
        *,
        config_id: uuid.UUID | None = None,
        reason: str | None = None,
        limit: int = SWEEP_BATCH,
    ) -> int:
        """Mark ``running`` logs whose lease is gone as ``interrupted`` (all configs, or one); the
        sweep of all configs also gives up on unleased logs older than ``UNLEASED_AFTER``.
        ``reason`` replaces the usual words (e.g. ``TAKEN_OVER``). Returns how many."""
        now = now or utcnow()
        live_tokens = Lease.select(Lease.token).where(Lease.expires_at > now)
        dead: Combinable = BackupLog.lease_token.is_not_null() & BackupLog.lease_token.not_in(
            live_tokens
        )
        if config_id is None:
            dead = dead | (
                BackupLog.lease_token.is_null() & (BackupLog.started_at < now - UNLEASED_AFTER)
            )
        where = (BackupLog.status == "running") & dead
        if config_id is not None:
            where = where & (BackupLog.config == config_id)
        rows: list[dict[str, Any]] = (
            await BackupLog.select(
                BackupLog.id,
                BackupLog.user,
                BackupLog.config,
                BackupLog.agent,
                BackupLog.s3_path,
                BackupLog.upload_id,
                BackupLog.upload_state,
                BackupLog.lease_token,
            )
            .where(where)
            .order_by(BackupLog.started_at)
            .limit(limit)
        )
        if not rows:
            return 0
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if reason is not None:
                why = reason
            elif row["lease_token"] is None:
                why = UNLEASED_STOPPED
            else:
                why = AGENT_STOPPED if row["agent"] is not None else SERVER_STOPPED
            groups.setdefault(why, []).append(row)
        count = 0
        for why, members in groups.items():
            by_id = {row["id"]: row for row in members}
            # Conditional on ``running``: a complete that lands meanwhile wins, and is kept.
            changed = (
                await BackupLog.update(
                    {
                        BackupLog.status: "interrupted",
                        BackupLog.error: why,
                        BackupLog.completed_at: now,
                        BackupLog.progress: None,
                    }
                )
                .where(BackupLog.id.is_in(list(by_id)) & (BackupLog.status == "running"))
                .returning(BackupLog.id)
            )
            await refresh_last_backups(by_id[item["id"]]["config"] for item in changed)
            for item in changed:
                row = by_id[item["id"]]
                count += 1
                log.info("backup %s was interrupted: %s", row["id"], why)
                await self._abort(row)
                self._publish(row, why)
        return count

    async def abort_leftover_uploads(self, limit: int = SWEEP_BATCH) -> int:
        """Abort multipart uploads of runs that ended without freeing them; returns how many."""
        rows: list[dict[str, Any]] = (
            await BackupLog.select(
                BackupLog.id, BackupLog.s3_path, BackupLog.upload_id, BackupLog.upload_state
            )
            .where(
                BackupLog.status.is_in(list(FINISHED_WITH_UPLOAD))
                & (BackupLog.upload_state == "multipart")
                & BackupLog.upload_id.is_not_null()
            )
            .limit(limit)
        )
        aborted = 0
        for row in rows:
            aborted += await self._abort(row)
        return aborted

    async def _abort(self, row: dict[str, Any]) -> bool:
        """Abort the log's multipart upload, if it has one; True when it is gone now."""
        if row["upload_state"] != "multipart" or not row["upload_id"]:
            return False
        try:
            await self.storage.abort_multipart(row["s3_path"], row["upload_id"])
        except NoSuchUpload:
            pass
        except ObjectStoreError as exc:
            log.warning(
                "could not abort the multipart upload of backup %s (%s); trying again later",
                row["id"],
                exc,
            )
            return False
        await BackupLog.update({BackupLog.upload_state: "aborted"}).where(BackupLog.id == row["id"])
        return True

    def _publish(self, row: dict[str, Any], why: str) -> None:
        if self.live is not None:
            self.live.backup_changed(row, "interrupted", why)
