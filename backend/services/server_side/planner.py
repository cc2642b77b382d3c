"""Which server-side configs are due: Back Up Now requests, schedule slots and retries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from backend.backups.tables import BackupConfig, BackupLog, RunRequest
from backend.services.alerts import config_options, config_schedule
from backend.services.clock import aware, utcnow

__all__ = ["PlannedRun", "Planner", "retry_policy"]

DEFAULT_ATTEMPTS = 3
DEFAULT_DELAY = 60


def retry_policy(options: Mapping[str, Any]) -> tuple[int, int]:
    """``(attempts, delaySeconds)`` of ``options.retry``, with the documented defaults and bounds."""
    retry = options.get("retry")
    attempts, delay = DEFAULT_ATTEMPTS, DEFAULT_DELAY
    if isinstance(retry, dict):
        a, d = retry.get("attempts"), retry.get("delaySeconds")
        if isinstance(a, int) and not isinstance(a, bool):
            attempts = min(10, max(1, a))
        if isinstance(d, int | float) and not isinstance(d, bool) and d >= 0:
            delay = int(d)
    return attempts, delay


@dataclass(frozen=True)
class PlannedRun:
    """One server-side run to make: why (trigger), which attempt, and the request it answers."""

    config_id: uuid.UUID
    trigger: str
    attempt: int = 1
    max_attempts: int = 1
    run_request: str | None = None
    slot: datetime | None = None


class Planner:
    """Decides which server-side configs run now; schedules are read in the server's zone."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz

    async def plan(self, now: datetime) -> list[PlannedRun]:
        """Runs due at ``now``: pending requests first, then schedule slots, then retries."""
        configs = await BackupConfig.select(
            BackupConfig.id, BackupConfig.options, BackupConfig.created_at
        ).where((BackupConfig.execution_mode == "server") & BackupConfig.agent.is_null())
        planned: list[PlannedRun] = []
        for config in configs:
            run = await self.plan_config(config, now)
            if run is not None:
                planned.append(run)
        return planned

    async def plan_config(self, config: dict[str, Any], now: datetime) -> PlannedRun | None:
        """The run ``config`` (its id, options and creation time) is due for at ``now``, if any."""
        config_id = config["id"]
        request = (
            await RunRequest.select(RunRequest.id)
            .where(
                (RunRequest.config == config_id)
                & RunRequest.agent.is_null()
                & (RunRequest.status == "pending")
            )
            .order_by(RunRequest.requested_at)
            .first()
        )
        if request is not None:
            return PlannedRun(config_id, "request", run_request=str(request["id"]))
        options = config_options(config["options"])
        schedule = config_schedule(options)
        if schedule is None:
            return None
        attempts, delay = retry_policy(options)
        last_first = (
            await BackupLog.select(BackupLog.started_at)
            .where((BackupLog.config == config_id) & (BackupLog.trigger == "schedule"))
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        slot = schedule.due(
            aware(last_first["started_at"]) if last_first else None,
            now,
            self.tz,
            since=aware(config["created_at"]),
        )
        if slot is not None:
            return PlannedRun(config_id, "schedule", 1, attempts, slot=slot)
        last = (
            await BackupLog.select(
                BackupLog.status,
                BackupLog.attempt,
                BackupLog.max_attempts,
                BackupLog.completed_at,
                BackupLog.started_at,
            )
            .where((BackupLog.config == config_id) & BackupLog.trigger.is_in(["schedule", "retry"]))
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        # An interrupted run (the process that ran it died) is retried like a failed one.
        if last is None or last["status"] not in ("failed", "interrupted"):
            return None
        attempt = int(last["attempt"] or 1)
        allowed = int(last["max_attempts"] or 1)
        if attempt >= allowed:
            return None
        finished = aware(last["completed_at"]) or aware(last["started_at"])
        assert finished is not None
        if now < finished + timedelta(seconds=delay * 2 ** (attempt - 1)):
            return None
        return PlannedRun(config_id, "retry", attempt + 1, allowed)

    async def still_due(self, run: PlannedRun, now: datetime) -> bool:
        """Whether ``run`` is still to be made; call it under the config's lease. A Back Up Now
        request is claimed here (``pending`` → ``started``), so no other run answers it."""
        config = (
            await BackupConfig.select(
                BackupConfig.id, BackupConfig.options, BackupConfig.created_at
            )
            .where((BackupConfig.id == run.config_id) & (BackupConfig.execution_mode == "server"))
            .first()
        )
        if config is None:
            return False
        if run.trigger == "request":
            assert run.run_request is not None
            taken = (
                await RunRequest.update(
                    {RunRequest.status: "started", RunRequest.started_at: utcnow()}
                )
                .where(
                    (RunRequest.id == uuid.UUID(run.run_request)) & (RunRequest.status == "pending")
                )
                .returning(RunRequest.id)
            )
            return bool(taken)
        again = await self.plan_config(config, now)
        return again is not None and again.trigger == run.trigger and again.attempt == run.attempt
