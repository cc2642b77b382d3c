"""Named, expiring locks in the database, shared by every server process and every agent.

``config:{id}`` makes sure one config never runs twice at once, across machines and processes;
``server:{task}`` elects one server process to run a periodic task. A lease is taken with one
conditional statement (an UPDATE of an expired row, else an INSERT that a unique index may refuse),
so two contenders can never both win, on SQLite or PostgreSQL. A holder that crashes stops renewing
and the lease lapses at ``expires_at``: no stale lock outlives its TTL.

A lease also records its ``owner`` (``agent:{id}`` or ``server``) and the holder's ``instance`` (an
agent's per-process id). An agent that restarts after a crash knows which of its own processes are
dead (see ``desktop_agent.engine``'s instance registry) and names them in ``take_over``: a live lease
held by one of those is handed over at once instead of after its TTL. Only the same owner can do
that, so one agent never takes another's lease.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.backups.tables import Lease
from backend.errors import Conflict
from backend.services.clock import aware, iso, utcnow

__all__ = ["SERVER_OWNER", "LeaseGrant", "LeaseService", "agent_owner", "config_lease_name"]

SERVER_OWNER = "server"
"""The ``owner`` of the leases server processes take (server-side runs, periodic tasks)."""


def config_lease_name(config_id: str | uuid.UUID) -> str:
    return f"config:{config_id}"


def agent_owner(agent_id: str | uuid.UUID) -> str:
    """The ``owner`` of the leases an agent takes."""
    return f"agent:{agent_id}"


@dataclass(frozen=True)
class LeaseGrant:
    name: str
    token: str
    holder: str
    expires_at: datetime
    taken_over: bool = False
    """It was taken over from a dead process of the same owner (it had not lapsed)."""

    def to_json(self) -> dict[str, str | None]:
        return {"token": self.token, "expiresAt": iso(self.expires_at)}


class LeaseService:
    """Acquire, renew and release leases. ``now`` is injectable for tests with a fake clock."""

    def __init__(self) -> None:
        self._now = utcnow

    async def acquire(
        self,
        name: str,
        holder: str,
        ttl: float,
        *,
        now: datetime | None = None,
        owner: str | None = None,
        instance: str | None = None,
        take_over: Sequence[str] = (),
    ) -> LeaseGrant | None:
        """Take the lease if it is free or lapsed, or if ``owner`` holds it from one of the
        ``take_over`` instances (dead processes of its own); None when someone else holds it."""
        now = now or self._now()
        token = secrets.token_hex(16)
        expires = now + timedelta(seconds=ttl)
        values: dict[Any, Any] = {
            Lease.holder: holder[:200],
            Lease.token: token,
            Lease.acquired_at: now,
            Lease.expires_at: expires,
            Lease.owner: owner,
            Lease.instance: instance,
        }
        taken = (
            await Lease.update(values)
            .where((Lease.name == name) & (Lease.expires_at <= now))
            .returning(Lease.id)
        )
        taken_over = False
        if not taken and owner is not None and take_over:
            # One conditional statement again: the lease moves only if it is still held by that
            # owner's dead instance at this moment.
            taken = (
                await Lease.update(values)
                .where(
                    (Lease.name == name)
                    & (Lease.owner == owner)
                    & Lease.instance.is_in(list(take_over))
                )
                .returning(Lease.id)
            )
            taken_over = bool(taken)
        if not taken:
            inserted = (
                await Lease.insert(
                    Lease(
                        id=uuid.uuid4(),
                        name=name,
                        holder=holder[:200],
                        token=token,
                        acquired_at=now,
                        expires_at=expires,
                        owner=owner,
                        instance=instance,
                    )
                )
                .on_conflict(action="DO NOTHING")
                .returning(Lease.id)
            )
            if not inserted:
                return None
        return LeaseGrant(
            name=name,
            token=token,
            holder=holder,
            expires_at=expires,
            taken_over=taken_over,
        )

    async def acquire_or_conflict(
        self, name: str, holder: str, ttl: float, *, now: datetime | None = None
    ) -> LeaseGrant:
        grant = await self.acquire(name, holder, ttl, now=now)
        if grant is None:
            current = await self.current(name)
            who = current["holder"] if current else "another runner"
            expires = current["expires_at"] if current else None
            until = iso(aware(expires)) if isinstance(expires, datetime) else "soon"
            raise Conflict(f"already running on {who} until {until}")
        return grant

    async def renew(
        self, name: str, token: str, ttl: float, *, now: datetime | None = None
    ) -> LeaseGrant | None:
        """Extend a lease still held with ``token``; None when it was lost."""
        now = now or self._now()
        expires = now + timedelta(seconds=ttl)
        rows = (
            await Lease.update({Lease.expires_at: expires})
            .where((Lease.name == name) & (Lease.token == token) & (Lease.expires_at > now))
            .returning(Lease.holder)
        )
        if not rows:
            return None
        return LeaseGrant(name=name, token=token, holder=rows[0]["holder"], expires_at=expires)

    async def release(self, name: str, token: str) -> None:
        """Give the lease up (idempotent; a lease taken over by someone else is left alone)."""
        await Lease.delete().where((Lease.name == name) & (Lease.token == token))

    async def current(self, name: str, *, now: datetime | None = None) -> dict[str, Any] | None:
        """The live lease called ``name`` (holder, expires_at), or None when free."""
        now = now or self._now()
        row = (
            await Lease.select(Lease.holder, Lease.expires_at)
            .where((Lease.name == name) & (Lease.expires_at > now))
            .first()
        )
        return row
