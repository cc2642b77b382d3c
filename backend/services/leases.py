"""Named, expiring locks in the database, shared by every server process and every agent.

``config:{id}`` makes sure one config never runs twice at once, across machines and processes;
``server:{task}`` elects one server process to run a periodic task. A lease is taken with one
conditional statement (an UPDATE of an expired row, else an INSERT that a unique index may refuse),
so two contenders can never both win, on SQLite or PostgreSQL. A holder that crashes stops renewing
and the lease lapses at ``expires_at``: no stale lock outlives its TTL.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.backups.tables import Lease
from backend.errors import Conflict
from backend.services.clock import aware, iso, utcnow

__all__ = ["LeaseGrant", "LeaseService", "config_lease_name"]


def config_lease_name(config_id: str | uuid.UUID) -> str:
    return f"config:{config_id}"


@dataclass(frozen=True)
class LeaseGrant:
    name: str
    token: str
    holder: str
    expires_at: datetime

    def to_json(self) -> dict[str, str | None]:
        return {"token": self.token, "expiresAt": iso(self.expires_at)}


class LeaseService:
    """Acquire, renew and release leases. ``now`` is injectable for tests with a fake clock."""

    def __init__(self) -> None:
        self._now = utcnow

    async def acquire(
        self, name: str, holder: str, ttl: float, *, now: datetime | None = None
    ) -> LeaseGrant | None:
        """Take the lease if it is free or lapsed; None when someone else holds it."""
        now = now or self._now()
        token = secrets.token_hex(16)
        expires = now + timedelta(seconds=ttl)
        values: dict[Any, Any] = {
            Lease.holder: holder[:200],
            Lease.token: token,
            Lease.acquired_at: now,
            Lease.expires_at: expires,
        }
        taken = (
            await Lease.update(values)
            .where((Lease.name == name) & (Lease.expires_at <= now))
            .returning(Lease.id)
        )
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
                    )
                )
                .on_conflict(action="DO NOTHING")
                .returning(Lease.id)
            )
            if not inserted:
                return None
        return LeaseGrant(name=name, token=token, holder=holder, expires_at=expires)

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
