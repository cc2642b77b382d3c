"""The agent hot path's per-process state: API-key authentication, the heartbeat buffer and the
rate limiter.

The heartbeat is the server's hottest path (every agent, every poll interval), so the key lookup and
the ``lastSeen`` write are kept off the database where that is safe:

* ``AgentRegistry`` caches digest → agent for ``agent_cache_seconds``; a revocation made through this
  process drops the entry at once (other processes re-read within that bound).
* Heartbeats are buffered in memory and written in one ``UPDATE … WHERE id IN (…)`` per flush
  (``heartbeat_flush_seconds``). Status reads merge the buffer, so this process answers exactly and
  others lag by at most one flush, far below the offline threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, dict_factory

from backend.agents.tables import Agent
from backend.errors import NotAuthenticated, RateLimited
from backend.security import API_KEY_PREFIX, api_key_digest
from backend.services.clock import aware, utcnow
from backend.settings import Settings

__all__ = ["MAX_KEY_LENGTH", "AgentIdentity", "AgentRegistry"]

log = logging.getLogger("backapp.agents")

MAX_KEY_LENGTH = 200
_LOOKUP_COLUMNS = 'id, "user", name, active, platform, version, mode'


@dataclass(frozen=True)
class AgentIdentity:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    platform: str | None
    version: str | None
    mode: str | None = None


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class AgentRegistry:
    """Per-process state of the agent hot path: key cache, heartbeat buffer, rate limiter."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[AgentIdentity, float]] = {}
        self._digest_of: dict[uuid.UUID, str] = {}
        self._pending: dict[uuid.UUID, datetime] = {}
        self._seen: dict[uuid.UUID, datetime] = {}
        self._buckets: dict[uuid.UUID, _Bucket] = {}
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._revalidated = 0.0
        self._sqlite: aiosqlite.Connection | None = None
        self._sqlite_lock = asyncio.Lock()
        self._listener: Any = None
        self.notify_channel: str | None = None

    # --- authentication ---------------------------------------------------------------------

    async def authenticate(self, api_key: str | None) -> AgentIdentity:
        if not api_key:
            raise NotAuthenticated("missing X-Agent-API-Key header")
        if len(api_key) > MAX_KEY_LENGTH or not api_key.startswith(API_KEY_PREFIX):
            raise NotAuthenticated("invalid API key")
        digest = api_key_digest(self.settings.secret_key, api_key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < self.settings.agent_cache_seconds:
            identity = hit[0]
        else:
            row = await self._lookup(digest)
            if row is None or not row["active"]:
                self._cache.pop(digest, None)
                raise NotAuthenticated("invalid or revoked API key")
            identity = AgentIdentity(
                id=row["id"],
                user_id=row["user"],
                name=row["name"],
                platform=row["platform"],
                version=row["version"],
                mode=row["mode"],
            )
            self._cache[digest] = (identity, now)
            self._digest_of[identity.id] = digest
        self._rate_limit(identity.id, now)
        return identity

    async def _lookup(self, digest: str) -> dict[str, Any] | None:
        """The agent behind a key digest: one indexed SELECT on a long-lived connection.

        Piccolo's SQLite engine opens a new connection (and thread) per query, ~0.65 ms of CPU;
        this costs ~0.05 ms. On PostgreSQL the raw pool query skips Piccolo's query building
        (~0.31 ms -> ~0.08 ms). Measured with bench/heartbeat.py and py-spy."""
        engine = Agent._meta.db
        sql = f"SELECT {_LOOKUP_COLUMNS} FROM {Agent._meta.tablename} WHERE api_key_digest = "
        if isinstance(engine, PostgresEngine) and engine.pool is not None:
            record = await engine.pool.fetchrow(sql + "$1", digest)
            return dict(record) if record is not None else None
        if isinstance(engine, SQLiteEngine):
            if self._sqlite is None:
                async with self._sqlite_lock:
                    if self._sqlite is None:
                        conn = await aiosqlite.connect(**engine.connection_kwargs)
                        conn.row_factory = dict_factory  # type: ignore[assignment]
                        self._sqlite = conn
            async with self._sqlite.execute(sql + "?", (digest,)) as cursor:
                rows = list(await cursor.fetchall())  # step to the end: no read lock left behind
            return dict(rows[0]) if rows else None
        return await (
            Agent.select(
                Agent.id,
                Agent.user,
                Agent.name,
                Agent.active,
                Agent.platform,
                Agent.version,
                Agent.mode,
            )
            .where(Agent.api_key_digest == digest)
            .first()
        )

    def invalidate(self, agent_id: uuid.UUID) -> None:
        digest = self._digest_of.pop(agent_id, None)
        if digest is not None:
            self._cache.pop(digest, None)
        self._pending.pop(agent_id, None)
        self._seen.pop(agent_id, None)
        self._buckets.pop(agent_id, None)

    async def revoked(self, agent_id: uuid.UUID) -> None:
        """Forget the agent here and tell the other server processes (PostgreSQL NOTIFY)."""
        self.invalidate(agent_id)
        if self.notify_channel:
            await Agent.raw("SELECT pg_notify({}, {})", self.notify_channel, str(agent_id))

    async def listen_postgres(self, dsn: str, channel: str = "backapp_agent_revoked") -> None:
        """Drop cached keys as soon as another process revokes them (LISTEN/NOTIFY).

        If the listening connection is lost, the cache TTL still bounds how long a revoked key
        is accepted here."""
        import asyncpg

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                self.invalidate(uuid.UUID(payload))
            except ValueError:
                log.warning("ignored a malformed revocation notice")

        self._listener = await asyncpg.connect(dsn)
        await self._listener.add_listener(channel, on_notify)
        self.notify_channel = channel

    def _rate_limit(self, agent_id: uuid.UUID, now: float) -> None:
        capacity = float(self.settings.agent_rate_limit)
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            bucket = self._buckets[agent_id] = _Bucket(capacity, now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * capacity / 60.0)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            retry = int((1.0 - bucket.tokens) * 60.0 / capacity) + 1
            raise RateLimited("too many requests from this agent: slow down", retry_after=retry)
        bucket.tokens -= 1.0

    # --- heartbeats -------------------------------------------------------------------------

    async def heartbeat(
        self,
        identity: AgentIdentity,
        version: str | None,
        platform: str | None,
        mode: str | None = None,
    ) -> None:
        """Note that the agent is alive; record what it says about itself when that changed
        (``mode``: ``None`` leaves the recorded one as it is)."""
        now = utcnow()
        changed: dict[Any, Any] = {}
        if version is not None and version != identity.version:
            changed[Agent.version] = version
        if platform is not None and platform != identity.platform:
            changed[Agent.platform] = platform
        if mode is not None and mode != identity.mode:
            changed[Agent.mode] = mode
        if changed:
            changed[Agent.last_seen] = now
            changed[Agent.updated_at] = now
            await Agent.update(changed).where(Agent.id == identity.id)
            digest = self._digest_of.get(identity.id)
            if digest is not None:
                self._cache.pop(digest, None)
        else:
            self._pending[identity.id] = now
        self._seen[identity.id] = now

    def last_seen(self, agent_id: uuid.UUID, stored: datetime | None) -> datetime | None:
        """The newer of the stored value and what this process has heard but not yet written."""
        mine = self._seen.get(agent_id)
        stored = aware(stored)
        if mine is None:
            return stored
        return mine if stored is None or mine > stored else stored

    async def flush(self) -> int:
        async with self._flush_lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return 0
            stamp = max(pending.values())
            ids = list(pending)
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    await Agent.update({Agent.last_seen: stamp}).where(Agent.id.is_in(chunk))
            except Exception:
                # Keep them for the next flush rather than lose a heartbeat.
                for agent_id, seen in pending.items():
                    self._pending.setdefault(agent_id, seen)
                raise
            if len(self._seen) > 4 * max(len(ids), 1000):
                self._seen = {k: v for k, v in self._seen.items() if k in pending}
            return len(ids)

    async def revalidate(self) -> int:
        """Re-read every cached agent in bulk (one query per 500); returns how many are still valid.

        A busy key thus never expires on the request path (a real agent beats every 30 s, far
        past the cache lifetime).
        Revoked, deleted or re-keyed agents drop out; entries idle for longer than the offline
        threshold are evicted instead of re-read. An entry is still trusted only while younger
        than ``agent_cache_seconds``, so the revocation bound is unchanged."""
        if not self._cache:
            return 0
        started = time.monotonic()
        idle_after = self.settings.offline_after_seconds
        snapshot: dict[str, tuple[AgentIdentity, float]] = {}
        for digest, entry in list(self._cache.items()):
            bucket = self._buckets.get(entry[0].id)
            if bucket is None or started - bucket.stamp > idle_after:
                self._cache.pop(digest, None)
                self._digest_of.pop(entry[0].id, None)
            else:
                snapshot[digest] = entry
        ids = [identity.id for identity, _ in snapshot.values()]
        rows: dict[uuid.UUID, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in await Agent.select(
                Agent.id,
                Agent.user,
                Agent.name,
                Agent.active,
                Agent.platform,
                Agent.version,
                Agent.mode,
                Agent.api_key_digest,
            ).where(Agent.id.is_in(chunk)):
                rows[row["id"]] = row
        kept = 0
        for digest, entry in snapshot.items():
            if self._cache.get(digest) is not entry:
                continue  # invalidated or re-read meanwhile: leave it alone
            fresh = rows.get(entry[0].id)
            if fresh is None or not fresh["active"] or fresh["api_key_digest"] != digest:
                self._cache.pop(digest, None)
                continue
            self._cache[digest] = (
                AgentIdentity(
                    id=fresh["id"],
                    user_id=fresh["user"],
                    name=fresh["name"],
                    platform=fresh["platform"],
                    version=fresh["version"],
                    mode=fresh["mode"],
                ),
                started,
            )
            kept += 1
        return kept

    async def _maintain(self, stopping: asyncio.Event) -> None:
        """Write buffered heartbeats, and re-read cached keys at half their lifetime."""
        cache = self.settings.agent_cache_seconds
        period = self.settings.heartbeat_flush_seconds
        if cache > 0:
            period = min(period, cache / 2)
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), period)
            except TimeoutError:
                pass
            try:
                await self.flush()
                if cache > 0 and time.monotonic() - self._revalidated >= cache / 2:
                    self._revalidated = time.monotonic()
                    await self.revalidate()
            except Exception:
                log.exception(
                    "agent housekeeping failed (heartbeat writes / key re-reads); retrying"
                )

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._maintain(self._stopping))

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
            self.notify_channel = None
        if self._task is not None:
            # Never cancel a flush mid-query: ask the loop to finish, it flushes once more and ends.
            self._stopping.set()
            await self._task
            self._task = None
        await self.flush()
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None
