"""Back Up Now: run requests, from the owner's click to the agent (or server) that starts the backup.

A request is a ``RunRequest`` row (``pending`` → ``started`` when a backup answers it, or
``expired`` when nobody started it within an hour), so it survives a dropped WebSocket or a restarted
server process. The row is the truth; the live message over the agent's WebSocket only makes the
agent hear of it within seconds instead of at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, RunRequest
from backend.errors import Conflict, InvalidInput, NotFound
from backend.run_schemas import RunRequestOut
from backend.schemas import RunRequestRef
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentIdentity, assigned_config, parse_uuid, users_row
from backend.services.clock import aware, iso, utcnow
from backend.services.leases import LeaseGrant, LeaseService, agent_owner, config_lease_name
from backend.services.orphans import TAKEN_OVER, OrphanSweeper
from backend.services.pubsub import SERVER_CHANNEL, LiveEvents
from backend.settings import Settings

__all__ = [
    "REQUEST_TTL",
    "RunService",
    "check_run_request",
    "mark_run_started",
    "run_message",
]

log = logging.getLogger(__name__)

REQUEST_TTL = timedelta(hours=1)
"""A request not started within this time becomes ``expired``."""

PENDING_REFRESH_SECONDS = 1.0
"""How stale this process's view of "which agents have pending requests" may be. Heartbeats are the
hot path (thousands a second): they consult that set and query the table only for agents in it, and
the set is re-read in one query at most this often. A request made on this process is in it at once;
one made on another process shows up in heartbeats here within this delay (its WebSocket message is
immediate)."""


def run_message(request_id: str | uuid.UUID, config_id: str | uuid.UUID) -> dict[str, Any]:
    """What an agent's WebSocket receives for a request."""
    return {"type": "run", "runRequestId": str(request_id), "configId": str(config_id)}


def _out(row: dict[str, Any]) -> RunRequestOut:
    return RunRequestOut(
        id=str(row["id"]),
        config_id=str(row["config"]),
        status=row["status"],
        requested_at=iso(row["requested_at"]) or "",
    )


class RunService:
    def __init__(
        self,
        settings: Settings,
        live: LiveEvents,
        leases: LeaseService,
        sweeper: OrphanSweeper | None = None,
    ) -> None:
        self.settings = settings
        self.live = live
        self.leases = leases
        self.sweeper = sweeper
        """Interrupts the runs a new lease replaces (none in tests that leave it out)."""
        self._timezones: dict[uuid.UUID, str] = {}
        self._pending_agents: set[uuid.UUID] = set()
        self._pending_checked = float("-inf")
        self._added_meanwhile: set[uuid.UUID] = set()
        self._refresh_task: asyncio.Task[None] | None = None

    # --- the owner asks ---------------------------------------------------------------------

    async def expire_stale(self, *, now: datetime | None = None) -> int:
        """Mark requests older than ``REQUEST_TTL`` that nobody started as ``expired``."""
        cutoff = (now or utcnow()) - REQUEST_TTL
        rows = (
            await RunRequest.update({RunRequest.status: "expired"})
            .where((RunRequest.status == "pending") & (RunRequest.requested_at < cutoff))
            .returning(RunRequest.id)
        )
        return len(rows)

    async def request(self, user: CurrentUser, config_id: str) -> RunRequestOut:
        """Ask for a backup of this config now. 409 if one is already pending; 400 if the config
        is agent-based and has no active agent."""
        config = await users_row(
            BackupConfig,
            user,
            config_id,
            "config",
            BackupConfig.id,
            BackupConfig.execution_mode,
            BackupConfig.agent,
            BackupConfig.agent.active.as_alias("agent_active"),
        )
        agent_id: uuid.UUID | None = None
        if config["execution_mode"] == "agent":
            if config["agent"] is None:
                raise InvalidInput(
                    "this configuration has no agent: assign one before backing up", field="agentId"
                )
            if not config["agent_active"]:
                raise InvalidInput(
                    "this configuration's agent is deactivated: reactivate it or assign another",
                    field="agentId",
                )
            agent_id = config["agent"]
        now = utcnow()
        await self.expire_stale(now=now)
        # A request meant for an agent that no longer runs this config would block new ones.
        await RunRequest.update({RunRequest.status: "expired"}).where(
            (RunRequest.config == config["id"])
            & (RunRequest.status == "pending")
            & (
                RunRequest.agent.is_null()
                if agent_id is None
                else (RunRequest.agent.is_null() | (RunRequest.agent != agent_id))
            )
        )
        if await RunRequest.exists().where(
            (RunRequest.config == config["id"]) & (RunRequest.status == "pending")
        ):
            raise Conflict("a Back Up Now request for this configuration is already pending")
        request_id = uuid.uuid4()
        await RunRequest(
            id=request_id,
            user=user.id,
            config=config["id"],
            agent=agent_id,
            status="pending",
            requested_at=now,
        ).save()
        # Two clicks racing past the check above (on two server processes): the older one wins.
        pending = (
            await RunRequest.select(RunRequest.id)
            .where((RunRequest.config == config["id"]) & (RunRequest.status == "pending"))
            .order_by(RunRequest.requested_at)
            .order_by(RunRequest.id)
        )
        if pending and pending[0]["id"] != request_id:
            await RunRequest.delete().where(RunRequest.id == request_id)
            raise Conflict("a Back Up Now request for this configuration is already pending")
        message = run_message(request_id, config["id"])
        if agent_id is not None:
            self._pending_agents.add(agent_id)
            self._added_meanwhile.add(agent_id)
            self.live.to_agent(agent_id, message)
        else:
            self.live.publish(message, SERVER_CHANNEL)
        out = RunRequestOut(
            id=str(request_id),
            config_id=str(config["id"]),
            status="pending",
            requested_at=iso(now) or "",
        )
        self.live.to_user(user.id, {"type": "runRequest", **_event(out)})
        return out

    async def list_for_config(self, user: CurrentUser, config_id: str) -> list[RunRequestOut]:
        await self.expire_stale()
        rows = (
            await RunRequest.select()
            .where(
                (RunRequest.config == parse_uuid(config_id, "config"))
                & (RunRequest.user == user.id)
            )
            .order_by(RunRequest.requested_at, ascending=False)
            .limit(10)
        )
        return [_out(r) for r in rows]

    # --- the agent hears of it ---------------------------------------------------------------

    async def _agents_with_pending(self) -> set[uuid.UUID]:
        """The agents with pending requests, as of at most ~PENDING_REFRESH_SECONDS ago.

        Only the first call ever waits for the read; afterwards a stale set is re-read in the
        background while heartbeats go on with the one they have (no heartbeat queues behind it)."""
        if self._pending_checked == float("-inf"):
            await self._refresh_pending()
        elif (
            time.monotonic() - self._pending_checked >= PENDING_REFRESH_SECONDS
            and self._refresh_task is None
        ):
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_pending())
        return self._pending_agents

    async def _refresh_pending(self) -> None:
        try:
            cutoff = utcnow() - REQUEST_TTL
            rows = await RunRequest.select(RunRequest.agent).where(
                (RunRequest.status == "pending")
                & (RunRequest.requested_at >= cutoff)
                & RunRequest.agent.is_not_null()
            )
            self._pending_agents = {r["agent"] for r in rows} | self._added_meanwhile
            self._pending_checked = time.monotonic()
        except Exception:
            if self._pending_checked == float("-inf"):
                raise
            log.exception("could not re-read pending Back Up Now requests; retrying")
        finally:
            self._added_meanwhile = set()
            self._refresh_task = None

    async def pending_for_agent(self, agent: AgentIdentity) -> list[RunRequestRef]:
        """Pending requests for configs this agent (still) runs. Most heartbeats find the agent
        absent from the shared pending set and touch no table at all."""
        if agent.id not in await self._agents_with_pending():
            return []
        cutoff = utcnow() - REQUEST_TTL
        rows = (
            await RunRequest.select(RunRequest.id, RunRequest.config, RunRequest.requested_at)
            .where(
                (RunRequest.agent == agent.id)
                & (RunRequest.status == "pending")
                & (RunRequest.requested_at >= cutoff)
                & (RunRequest.config.agent == agent.id)
                & (RunRequest.config.execution_mode == "agent")
            )
            .order_by(RunRequest.requested_at)
            .limit(100)
        )
        return [
            RunRequestRef(
                id=str(r["id"]),
                config_id=str(r["config"]),
                requested_at=iso(aware(r["requested_at"])) or "",
            )
            for r in rows
        ]

    # --- leases: one run of a config at a time ----------------------------------------------

    @staticmethod
    async def _agent_config(agent: AgentIdentity, config_id: str) -> uuid.UUID:
        cid, _ = await assigned_config(agent, config_id)
        return cid

    async def lease_acquire(
        self,
        agent: AgentIdentity,
        config_id: str,
        ttl: int,
        *,
        instance: str | None = None,
        take_over: Sequence[str] = (),
    ) -> LeaseGrant:
        """Take the config's run lease for this agent's process ``instance``; a lease held by one
        of its dead processes (``take_over``) is taken over at once. Whatever run the lease
        guarded before (lapsed, or taken over) is marked ``interrupted`` here and now, so a
        re-run never leaves a ghost ``running`` beside it."""
        cid = await self._agent_config(agent, config_id)
        name = config_lease_name(cid)
        grant = await self.leases.acquire(
            name,
            f"agent {agent.name}",
            ttl,
            owner=agent_owner(agent.id),
            instance=instance,
            take_over=take_over,
        )
        if grant is None:
            current = await self.leases.current(name)
            who = current["holder"] if current else "another runner"
            until = iso(aware(current["expires_at"])) if current else "soon"
            raise Conflict(f"config is already running on {who} until {until}")
        if self.sweeper is not None:
            reason = TAKEN_OVER if grant.taken_over else None
            await self.sweeper.interrupt_dead(config_id=cid, reason=reason)
        return grant

    async def lease_renew(
        self, agent: AgentIdentity, config_id: str, token: str, ttl: int
    ) -> LeaseGrant:
        name = config_lease_name(await self._agent_config(agent, config_id))
        grant = await self.leases.renew(name, token, ttl)
        if grant is None:
            raise Conflict("the lease was lost: it expired (and may be held by another runner now)")
        return grant

    async def lease_release(self, agent: AgentIdentity, config_id: str, token: str) -> None:
        name = config_lease_name(await self._agent_config(agent, config_id))
        await self.leases.release(name, token)

    # --- the agent's time zone ---------------------------------------------------------------

    async def record_timezone(self, agent: AgentIdentity, name: str | None) -> None:
        """Store the zone an agent reports (schedules and alerts use it). Written only when it
        changes as far as this process knows: one UPDATE per agent per process, not per beat."""
        if name is None:
            return
        name = name.strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"timezone: {name!r} is not an IANA time zone name such as 'Europe/Paris'",
                field="timezone",
            ) from None
        if self._timezones.get(agent.id) == name:
            return
        changed = (
            await Agent.update({Agent.timezone: name})
            .where((Agent.id == agent.id) & ((Agent.timezone != name) | Agent.timezone.is_null()))
            .returning(Agent.id)
        )
        if changed:
            # Its configs' schedules and periods now count in another zone: the rounds look again.
            await BackupConfig.update(
                {
                    BackupConfig.alert_due_at: None,
                    BackupConfig.retention_due_at: None,
                    BackupConfig.revision: BackupConfig.revision + 1,
                }
            ).where(BackupConfig.agent == agent.id)
        self._timezones[agent.id] = name


def _event(out: RunRequestOut) -> dict[str, Any]:
    return {
        "runRequestId": out.id,
        "configId": out.config_id,
        "status": out.status,
        "requestedAt": out.requested_at,
    }


async def check_run_request(
    agent_id: uuid.UUID | None, config_id: uuid.UUID, run_request_id: str
) -> uuid.UUID:
    """The request a starting backup answers: it must be one for this config (and agent)."""
    try:
        rid = uuid.UUID(run_request_id)
    except ValueError:
        raise NotFound("runRequestId: no such Back Up Now request for this config") from None
    where = (RunRequest.id == rid) & (RunRequest.config == config_id)
    if agent_id is not None:
        where = where & (RunRequest.agent == agent_id)
    if not await RunRequest.exists().where(where):
        raise NotFound("runRequestId: no such Back Up Now request for this config")
    return rid


async def mark_run_started(run_request_id: uuid.UUID, backup_id: uuid.UUID | str) -> bool:
    """Link the backup that answers a request: ``pending`` → ``started`` (also a request that
    expired while the agent was busy: it did answer it). The server's own runner claims its request
    (``started``, no backup yet) before the run, so that one only gets the backup's id. False when
    another backup had already answered it."""
    rows = (
        await RunRequest.update(
            {
                RunRequest.status: "started",
                RunRequest.started_at: utcnow(),
                RunRequest.backup_id: str(backup_id),
            }
        )
        .where(
            (RunRequest.id == run_request_id) & (RunRequest.status.is_in(["pending", "expired"]))
        )
        .returning(RunRequest.id)
    )
    if not rows:
        rows = (
            await RunRequest.update({RunRequest.backup_id: str(backup_id)})
            .where(
                (RunRequest.id == run_request_id)
                & (RunRequest.status == "started")
                & RunRequest.backup_id.is_null()
            )
            .returning(RunRequest.id)
        )
    return bool(rows)
