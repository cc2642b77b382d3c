"""The agent hot path's per-process state: API-key authentication, the heartbeat buffer and the
rate limiter.

The heartbeat is the server's hottest path (every agent, every poll interval), so the key lookup and
the ``lastSeen`` write are kept off the database where that is safe:

* ``AgentRegistry`` caches digest → agent until it is told the key changed: nothing is re-read while
  nothing happens, so an idle fleet costs nothing however large. A revocation (deactivate, delete)
  drops the entry in the revoking process at once and reaches the others by push: Redis pub/sub
  when ``BACKAPP_REDIS_URL`` is set, else PostgreSQL's LISTEN/NOTIFY. Where neither is live (SQLite
  with several processes, or a lost listening connection) every authentication reads the one-row
  revocation count (``KeyRevocations``) and forgets every cached key when it moved.
* Heartbeats are buffered in memory and written in one ``UPDATE … WHERE id IN (…)`` per flush
  (``heartbeat_flush_seconds``). Status reads merge the buffer, so this process answers exactly and
  others lag by at most one flush, far below the offline threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, dict_factory

from backend.agents.tables import Agent, KeyRevocations
from backend.errors import NotAuthenticated, RateLimited
from backend.security import API_KEY_PREFIX, api_key_digest
from backend.services.clock import aware, utcnow
from backend.services.offline import clear_offline
from backend.services.pubsub import AGENTS_CHANNEL, LiveEvents, decode
from backend.settings import Settings

__all__ = ["MAX_KEY_LENGTH", "AgentIdentity", "AgentRegistry"]

log = logging.getLogger("backapp.agents")

MAX_KEY_LENGTH = 200
_LOOKUP_COLUMNS = 'id, "user", name, active, platform, version, mode'
_COUNT_SQL = "SELECT revoked FROM backapp_key_revocations WHERE id = 1"
_BUMP_SQL = (
    "INSERT INTO backapp_key_revocations (id, revoked) VALUES (1, 1) ON CONFLICT (id) "
    "DO UPDATE SET revoked = backapp_key_revocations.revoked + 1"
)


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
        self._cache: dict[str, AgentIdentity] = {}
        self._digest_of: dict[uuid.UUID, str] = {}
        self._generation = 0
        """Bumped by every invalidation: a lookup that raced one is not cached."""
        self._epoch: int | None = None
        """The revocation count the cache is valid for (when revocations are not pushed)."""
        self._pending: dict[uuid.UUID, datetime] = {}
        self._back: set[uuid.UUID] = set()
        """Agents heard from after ``offline_after`` of silence here (or first heard from): the
        only ones the presence round can have marked offline (``services/offline.py``)."""
        self._seen: dict[uuid.UUID, datetime] = {}
        self._buckets: dict[uuid.UUID, _Bucket] = {}
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sqlite: aiosqlite.Connection | None = None
        self._sqlite_lock = asyncio.Lock()
        self._listener: Any = None
        self.notify_channel: str | None = None
        self._live: LiveEvents | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = False

    # --- authentication ---------------------------------------------------------------------

    async def authenticate(self, api_key: str | None) -> AgentIdentity:
        if not api_key:
            raise NotAuthenticated("missing X-Agent-API-Key header")
        if len(api_key) > MAX_KEY_LENGTH or not api_key.startswith(API_KEY_PREFIX):
            raise NotAuthenticated("invalid API key")
        digest = api_key_digest(self.settings.secret_key, api_key)
        caching = self.settings.agent_cache_seconds > 0
        if caching and not self.pushed:
            await self._check_revocations()
        identity = self._cache.get(digest) if caching else None
        if identity is None:
            generation = self._generation
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
            if caching and generation == self._generation:
                self._cache[digest] = identity
                self._digest_of[identity.id] = digest
        self._rate_limit(identity.id, time.monotonic())
        return identity

    @property
    def pushed(self) -> bool:
        """Whether revocations made by other processes are sure to reach this one by push right now
        (PostgreSQL LISTEN on an open connection). A Redis subscription makes them arrive sooner
        but does not count: a notice published while the subscription is not yet confirmed by
        Redis is lost, and a revoked key must never keep working, so beside Redis alone every
        authentication still compares the revocation count (one primary-key read)."""
        return self._listener is not None and not self._listener.is_closed()

    async def _check_revocations(self) -> None:
        """Forget every cached key if another process revoked one since the cache was filled."""
        count = await self._revocations()
        if count != self._epoch:
            self._forget_keys()
            self._epoch = count

    def _forget_keys(self) -> None:
        self._cache.clear()
        self._digest_of.clear()
        self._generation += 1

    async def _revocations(self) -> int:
        """The revocation count: one primary-key read (through :meth:`read`, like the key
        lookup)."""
        rows = await self.read(_COUNT_SQL)
        return int(rows[0]["revoked"] or 0) if rows else 0

    async def _sqlite_connection(self, engine: SQLiteEngine) -> aiosqlite.Connection:
        if self._sqlite is None:
            async with self._sqlite_lock:
                if self._sqlite is None:
                    conn = await aiosqlite.connect(**engine.connection_kwargs)
                    conn.row_factory = dict_factory  # type: ignore[assignment]
                    self._sqlite = conn
        return self._sqlite

    async def _lookup(self, digest: str) -> dict[str, Any] | None:
        """The agent behind a key digest: one indexed SELECT through :meth:`read`.

        Piccolo's SQLite engine opens a new connection (and thread) per query, ~0.65 ms of CPU;
        this costs ~0.05 ms. On PostgreSQL the raw pool query skips Piccolo's query building
        (~0.31 ms -> ~0.08 ms). Measured with bench/heartbeat.py and py-spy."""
        rows = await self.read(
            f"SELECT {_LOOKUP_COLUMNS} FROM {Agent._meta.tablename} WHERE api_key_digest = {{}}",
            digest,
        )
        return rows[0] if rows else None

    async def read(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """The rows of ``sql`` (``{}`` placeholders for ``args``), for the agent hot path's small
        reads (the key lookup, the revocation count, the heartbeat's limits and compaction
        request): on this registry's own long-lived SQLite connection, or straight on the
        PostgreSQL pool, skipping Piccolo's connection per query and query building."""
        engine = Agent._meta.db
        if isinstance(engine, PostgresEngine) and engine.pool is not None:
            text = sql.format(*(f"${i}" for i in range(1, len(args) + 1)))
            return [dict(r) for r in await engine.pool.fetch(text, *args)]
        if isinstance(engine, SQLiteEngine):
            conn = await self._sqlite_connection(engine)
            params = tuple(str(a) if isinstance(a, uuid.UUID) else a for a in args)
            async with conn.execute(sql.format(*("?" * len(args))), params) as cursor:
                return [dict(r) for r in await cursor.fetchall()]
        rows: list[dict[str, Any]] = await Agent.raw(sql, *args)
        return rows

    def invalidate(self, agent_id: uuid.UUID) -> None:
        """Forget what this process holds about the agent (its key, buffered state)."""
        digest = self._digest_of.pop(agent_id, None)
        if digest is not None:
            self._cache.pop(digest, None)
        self._generation += 1
        self._pending.pop(agent_id, None)
        self._seen.pop(agent_id, None)
        self._buckets.pop(agent_id, None)

    async def revoked(self, agent_id: uuid.UUID) -> None:
        """The agent's key changed (deactivated, deleted): forget it here, and tell every other
        process by each way there is, so that none of them accepts the key once this returns:
        the revocation count (read where nothing is pushed), PostgreSQL NOTIFY, Redis."""
        self.invalidate(agent_id)
        await KeyRevocations.raw(_BUMP_SQL)
        if self.notify_channel:
            await Agent.raw("SELECT pg_notify({}, {})", self.notify_channel, str(agent_id))
        if self._live is not None and self._live.kind == "redis":
            await self._live.publish_now(
                {"type": "revoked", "agentId": str(agent_id)}, AGENTS_CHANNEL
            )

    async def listen_postgres(self, dsn: str, channel: str = "backapp_agent_revoked") -> None:
        """Drop cached keys as soon as another process revokes them (LISTEN/NOTIFY).

        If the listening connection is lost, every authentication reads the revocation count
        instead (see :attr:`pushed`)."""
        import asyncpg

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                self.invalidate(uuid.UUID(payload))
            except ValueError:
                log.warning("ignored a malformed revocation notice")

        self._listener = await asyncpg.connect(dsn)
        await self._listener.add_listener(channel, on_notify)
        self.notify_channel = channel

    async def _listen_redis(self, live: LiveEvents) -> None:
        """Drop cached keys that another process revoked, as Redis tells. While this is not
        subscribed, authentications read the revocation count instead."""
        try:
            async with live.subscription(AGENTS_CHANNEL) as subscriber:
                # Anything revoked before the subscription took effect: the count says so.
                self._epoch = None
                await self._check_revocations()
                self._subscribed = True
                async for payload in subscriber.iter_events():
                    event = decode(payload)
                    if event is None or event.get("type") != "revoked":
                        continue
                    try:
                        self.invalidate(uuid.UUID(str(event.get("agentId"))))
                    except ValueError:
                        log.warning("ignored a malformed revocation notice")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("listening for key revocations failed; reading the count instead")
        finally:
            self._subscribed = False
            self._epoch = None  # the next authentication compares the count afresh

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
        before = self._seen.get(identity.id)
        self._seen[identity.id] = now
        back = (
            before is None or (now - before).total_seconds() > self.settings.offline_after_seconds
        )
        if back:
            # It may have been marked offline meanwhile: the next flush unmarks it.
            self._back.add(identity.id)
        if self._live is not None and back:
            # Back online as far as this process knows: the owner's open pages reload the
            # agent's status (going offline is told by the periodic presence round).
            self._live.to_user(
                identity.user_id, {"type": "agent", "agentId": str(identity.id), "online": True}
            )

    def last_seen(self, agent_id: uuid.UUID, stored: datetime | None) -> datetime | None:
        """The newer of the stored value and what this process has heard but not yet written."""
        mine = self._seen.get(agent_id)
        stored = aware(stored)
        if mine is None:
            return stored
        return mine if stored is None or mine > stored else stored

    async def flush(self) -> int:
        async with self._flush_lock:
            count = await self._flush_seen()
            back, self._back = self._back, set()
            if back:
                try:
                    # After the last_seen writes: a presence round in between marks none of them.
                    await clear_offline(back)
                except Exception:
                    self._back |= back
                    raise
            return count

    async def _flush_seen(self) -> int:
        """Write the buffered heartbeats: one ``UPDATE`` per 500 agents."""
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

    async def _maintain(self, stopping: asyncio.Event) -> None:
        """Write buffered heartbeats; forget keys idle past the offline threshold (in memory: no
        key is re-read, so an idle fleet costs no query)."""
        period = self.settings.heartbeat_flush_seconds
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), period)
            except TimeoutError:
                pass
            try:
                await self.flush()
                self._evict_idle(time.monotonic())
            except Exception:
                log.exception("agent housekeeping failed (heartbeat writes); retrying")

    def _evict_idle(self, now: float) -> None:
        idle_after = self.settings.offline_after_seconds
        for digest, identity in list(self._cache.items()):
            bucket = self._buckets.get(identity.id)
            if bucket is None or now - bucket.stamp > idle_after:
                self._cache.pop(digest, None)
                self._digest_of.pop(identity.id, None)

    def start(self, live: LiveEvents | None = None) -> None:
        """Start the heartbeat writer, and with Redis the revocation listener."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = loop.create_task(self._maintain(self._stopping))
        if live is not None:
            self._live = live
            if live.kind == "redis" and self._subscriber is None:
                self._subscriber = loop.create_task(self._listen_redis(live))

    async def stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
            self._subscriber = None
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
