"""Restores asked for from the web console: the owner picks paths, a machine and a folder on a
backup's page; the machine's agent performs the restore through the engine's restore path and
reports progress and the outcome.

A job is a ``RestoreJob`` row: ``pending`` → ``running`` (the agent took it) → ``completed`` or
``failed``; a job nobody took within ``JOB_TTL`` (a day: the machine was off) becomes ``expired``.
The row is the truth; the ``{"type": "restore"}`` message over the agent's WebSocket only makes a
running daemon hear of it at once instead of at its next heartbeat (``restoreRequests``).

Which machine may restore which backup is decided in one place, :func:`may_restore_to`: for now
only the machine that made the backup (a snapshot is encrypted with that machine's key). Widen it
there when a machine may inherit another's backups.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from backend.agents.tables import Agent
from backend.backups.tables import RestoreJob
from backend.errors import Conflict, InvalidInput, NotFound
from backend.restore_job_schemas import (
    RestoreJobFinish,
    RestoreJobOut,
    RestoreJobProgress,
    RestoreJobRequest,
    RestoreJobTicket,
)
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentIdentity, agents_row, parse_uuid, users_row
from backend.services.clock import aware, iso, utcnow
from backend.services.history import user_log
from backend.services.inheritance import readable_agent_ids, reader_agent_ids
from backend.services.pubsub import LiveEvents

__all__ = [
    "JOB_TTL",
    "RestoreJobService",
    "expire_stale_jobs",
    "may_restore_to",
    "restore_message",
]

JOB_TTL = timedelta(days=1)
"""A job not started within this time becomes ``expired``."""
PENDING_REFRESH_SECONDS = 2.0
"""How stale this process's set of "agents with pending restores" may be: heartbeats consult it
and query the table only for agents in it (the same trade as Back Up Now's, see ``runs``)."""


def restore_message(job_id: str | uuid.UUID) -> dict[str, Any]:
    """What an agent's WebSocket receives for a new job."""
    return {"type": "restore", "restoreId": str(job_id)}


async def may_restore_to(backup: dict[str, Any], agent: dict[str, Any], user_id: uuid.UUID) -> bool:
    """Whether ``agent`` (a row of the backup's owner ``user_id``) may restore ``backup`` (its log
    row): the machine that made it, or one that inherits that machine (the owner's mark, see
    :mod:`backend.services.inheritance`). An inherited *snapshot* is refused in words
    (:class:`Conflict`): its key opens only with the recovery code, which this server never has,
    so a job would fail on the machine; the new machine restores it itself with the code. So is an
    inherited *encrypted* archive (``….age``), for the same reason."""
    if backup["agent"] is None:
        return False
    if backup["agent"] == agent["id"]:
        return True
    if backup["agent"] not in await readable_agent_ids(user_id, agent["id"]):
        return False
    if backup.get("backup_type") == "incremental":
        raise Conflict(
            "agentId: this snapshot was made by another machine, and its key opens only with your "
            "recovery code, which the server never sees: on that machine run `backapp-agent "
            "restore BACKUP_ID --to DIR --recovery-code-stdin`",
            field="agentId",
        )
    if _encrypted(backup):
        raise Conflict(
            "agentId: this archive is encrypted with another machine's key, which opens only with "
            "your recovery code, which the server never sees: on that machine run "
            "`backapp-agent restore BACKUP_ID --to DIR --recovery-code-stdin`",
            field="agentId",
        )
    return True


def _encrypted(backup: dict[str, Any]) -> bool:
    return str(backup.get("filename") or "").endswith(".age")


def _out(row: dict[str, Any], agent_name: str) -> RestoreJobOut:
    paths = row["paths"]
    if isinstance(paths, str):  # SQLite hands JSON back as text
        import json

        paths = json.loads(paths)
    return RestoreJobOut(
        id=str(row["id"]),
        backup_id=str(row["backup"]),
        agent_id=str(row["agent"]),
        agent_name=agent_name,
        paths=[str(p) for p in paths or []],
        target=row["target"],
        conflict=row["conflict"],
        status=row["status"],
        files=int(row["files"] or 0),
        bytes=int(row["bytes"] or 0),
        renamed=int(row["renamed"] or 0),
        replaced=int(row["replaced"] or 0),
        unchanged=int(row["unchanged"] or 0),
        skipped=int(row["skipped"] or 0),
        error=row["error"],
        created_at=iso(row["created_at"]) or "",
        expires_at=iso(row["expires_at"]) or "",
        started_at=iso(row["started_at"]),
        finished_at=iso(row["finished_at"]),
    )


def _columns() -> list[Any]:
    """The job's columns and its machine's name (one join)."""
    return [*RestoreJob.all_columns(), RestoreJob.agent.name.as_alias("agent_name")]


async def expire_stale_jobs(moment: datetime) -> int:
    """Mark pending jobs past their day as ``expired`` in one ``UPDATE`` (the periodic
    housekeeping and every read of the owner's jobs); how many."""
    rows = (
        await RestoreJob.update(
            {
                RestoreJob.status: "expired",
                RestoreJob.finished_at: moment,
                RestoreJob.error: "the machine did not pick this restore up within a day",
            }
        )
        .where((RestoreJob.status == "pending") & (RestoreJob.expires_at < moment))
        .returning(RestoreJob.id)
    )
    return len(rows)


class RestoreJobService:
    """The owner's requests and the agent's side of them."""

    def __init__(self, live: LiveEvents, clock: Callable[[], datetime] = utcnow) -> None:
        self.live = live
        self.clock = clock
        """Now (UTC); tests move it to see a day pass."""
        self._pending_agents: set[uuid.UUID] = set()
        self._pending_checked = float("-inf")
        self._added_meanwhile: set[uuid.UUID] = set()
        """Agents given a job since the last re-read began: a read that began before the job
        was saved does not see it, so they are kept across it."""
        self._lock = asyncio.Lock()

    # --- the owner ---------------------------------------------------------------------------

    async def request(
        self, user: CurrentUser, backup_id: str, data: RestoreJobRequest
    ) -> RestoreJobOut:
        """A new pending job. 404 for a backup or machine that is not the user's, or a machine
        that may not restore this backup (:func:`may_restore_to`); 409 for a backup that is not
        completed; 400 for a target that is not an absolute folder."""
        backup = await user_log(user, backup_id)
        if backup["status"] != "completed":
            raise Conflict(f"this backup is {backup['status']}: only completed backups restore")
        agent = (
            await Agent.select(Agent.id, Agent.name, Agent.active)
            .where((Agent.id == parse_uuid(data.agent_id, "agent")) & (Agent.user == user.id))
            .first()
        )
        if agent is None or not await may_restore_to(backup, agent, user.id):
            raise NotFound(
                "agentId: no such machine that can restore this backup (the machine that made it, "
                "or one that replaces it)",
                field="agentId",
            )
        if not agent["active"]:
            raise InvalidInput(
                "agentId: this machine is deactivated: reactivate it first", field="agentId"
            )
        target = data.target.strip()
        if not (target.startswith("/") or (len(target) > 2 and target[1:3] in (":\\", ":/"))):
            raise InvalidInput(
                "target: give an absolute folder on that machine, such as /home/me/restored",
                field="target",
            )
        paths = [p.strip() for p in data.paths if p.strip()]
        now = self.clock()
        job_id = uuid.uuid4()
        await RestoreJob(
            id=job_id,
            user=user.id,
            backup=backup["id"],
            agent=agent["id"],
            paths=paths,
            target=target,
            conflict=data.conflict,
            status="pending",
            created_at=now,
            expires_at=now + JOB_TTL,
        ).save()
        self._pending_agents.add(agent["id"])
        self._added_meanwhile.add(agent["id"])
        self.live.to_agent(agent["id"], restore_message(job_id))
        out = await self.get(user, str(job_id))
        self._tell_owner(user.id, out)
        return out

    async def expire_stale(self, now: datetime | None = None) -> int:
        """Mark pending jobs past their day as ``expired``; how many."""
        return await expire_stale_jobs(now or self.clock())

    async def get(self, user: CurrentUser, job_id: str) -> RestoreJobOut:
        await self.expire_stale()
        row = await users_row(RestoreJob, user, job_id, "restore", *_columns())
        return _out(row, row["agent_name"])

    async def for_backup(self, user: CurrentUser, backup_id: str) -> list[RestoreJobOut]:
        """The latest jobs of one of the user's backups, newest first."""
        await self.expire_stale()
        rows = (
            await RestoreJob.select(*_columns())
            .where(
                (RestoreJob.backup == parse_uuid(backup_id, "backup"))
                & (RestoreJob.user == user.id)
            )
            .order_by(RestoreJob.created_at, ascending=False)
            .limit(20)
        )
        return [_out(r, r["agent_name"]) for r in rows]

    async def machines(
        self, user: CurrentUser, backup_id: str, search: str = ""
    ) -> list[dict[str, str]]:
        """The user's machines that may restore this backup and whose name contains ``search``
        (at most 20): what the page's machine search offers."""
        backup = await user_log(user, backup_id)
        if backup["agent"] is None:
            return []
        # The backup's own machine and the machines that replace it (may_restore_to): one indexed
        # read per step of the inheritance chain, then one read of those machines.
        readers = await reader_agent_ids(user.id, backup["agent"])
        if backup.get("backup_type") == "incremental" or _encrypted(backup):
            readers = {backup["agent"]}  # another machine would need the recovery code
        rows = await Agent.select(Agent.id, Agent.name, Agent.active).where(
            (Agent.user == user.id) & Agent.id.is_in(sorted(readers))
        )
        wanted = search.strip().lower()
        return sorted(
            (
                {"id": str(r["id"]), "name": r["name"]}
                for r in rows
                if r["active"] and wanted in r["name"].lower()
            ),
            key=lambda m: m["name"].lower(),
        )[:20]

    def _tell_owner(self, user_id: uuid.UUID, out: RestoreJobOut) -> None:
        self.live.to_user(
            user_id,
            {
                "type": "restore",
                "restoreId": out.id,
                "backupId": out.backup_id,
                "status": out.status,
                "files": out.files,
                "bytes": out.bytes,
            },
        )

    # --- the agent ---------------------------------------------------------------------------

    async def pending_ids(self, agent: AgentIdentity) -> list[str]:
        """The ids of this agent's pending jobs (heartbeat ``restoreRequests``). Most heartbeats
        find the agent absent from the shared pending set and read no table."""
        if time.monotonic() - self._pending_checked >= PENDING_REFRESH_SECONDS:
            async with self._lock:
                if time.monotonic() - self._pending_checked >= PENDING_REFRESH_SECONDS:
                    self._added_meanwhile = set()
                    read = await self._read_pending_agents()
                    self._pending_agents = read | self._added_meanwhile
                    self._pending_checked = time.monotonic()
        if agent.id not in self._pending_agents:
            return []
        rows = (
            await RestoreJob.select(RestoreJob.id)
            .where(
                (RestoreJob.agent == agent.id)
                & (RestoreJob.status == "pending")
                & (RestoreJob.expires_at >= self.clock())
            )
            .order_by(RestoreJob.created_at)
            .limit(20)
        )
        return [str(r["id"]) for r in rows]

    async def _read_pending_agents(self) -> set[uuid.UUID]:
        rows = await RestoreJob.select(RestoreJob.agent).where(
            (RestoreJob.status == "pending") & (RestoreJob.expires_at >= self.clock())
        )
        return {r["agent"] for r in rows}

    async def _agent_row(self, agent: AgentIdentity, job_id: str) -> dict[str, Any]:
        return await agents_row(
            RestoreJob, agent, parse_uuid(job_id, "restore"), "restore not found for this agent"
        )

    async def start(self, agent: AgentIdentity, job_id: str) -> RestoreJobTicket:
        """The agent takes a pending job (``running``); 409 when it is not pending any more (taken
        already, expired)."""
        row = await self._agent_row(agent, job_id)
        now = self.clock()
        expires = aware(row["expires_at"])
        if row["status"] == "pending" and expires is not None and expires < now:
            await self.expire_stale(now)
            raise Conflict("this restore expired: nobody picked it up within a day")
        taken = (
            await RestoreJob.update({RestoreJob.status: "running", RestoreJob.started_at: now})
            .where((RestoreJob.id == row["id"]) & (RestoreJob.status == "pending"))
            .returning(RestoreJob.id)
        )
        if not taken:
            raise Conflict(f"this restore is {row['status']}, not pending")
        out = _out({**row, "status": "running", "started_at": now}, agent.name)
        self._tell_owner(agent.user_id, out)
        return RestoreJobTicket(
            id=out.id,
            backup_id=out.backup_id,
            paths=out.paths,
            target=out.target,
            conflict=out.conflict,
        )

    async def progress(self, agent: AgentIdentity, job_id: str, data: RestoreJobProgress) -> None:
        row = await self._agent_row(agent, job_id)
        if row["status"] != "running":
            raise Conflict(f"this restore is {row['status']}, not running")
        await RestoreJob.update({RestoreJob.files: data.files, RestoreJob.bytes: data.bytes}).where(
            RestoreJob.id == row["id"]
        )
        self._tell_owner(
            agent.user_id,
            _out({**row, "files": data.files, "bytes": data.bytes}, agent.name),
        )

    async def finish(self, agent: AgentIdentity, job_id: str, data: RestoreJobFinish) -> str:
        """Record the outcome of a running job (a retried finish of a finished one is a no-op)."""
        row = await self._agent_row(agent, job_id)
        if row["status"] in ("completed", "failed"):
            return str(row["status"])
        if row["status"] != "running":
            raise Conflict(f"this restore is {row['status']}, not running")
        values = {
            "status": data.status,
            "files": data.files,
            "bytes": data.bytes,
            "renamed": data.renamed,
            "replaced": data.replaced,
            "unchanged": data.unchanged,
            "skipped": data.skipped,
            "error": data.error,
            "finished_at": self.clock(),
        }
        await RestoreJob.update({getattr(RestoreJob, k): v for k, v in values.items()}).where(
            RestoreJob.id == row["id"]
        )
        self._tell_owner(agent.user_id, _out({**row, **values}, agent.name))
        return data.status
