"""Live events between server processes: Back Up Now requests to agents, progress and logs to pages.

Publishing goes through Litestar's channels (``ChannelsPlugin``): a Redis pub/sub backend when
``BACKAPP_REDIS_URL`` is set, so an event published by one server process reaches sockets held by
any other; in memory otherwise (the embedded default: one process).

Channels:

    agent:{id}   what that agent's WebSocket must hear (``{"type": "run", …}``)
    user:{id}    what that user's pages show (progress, log lines, backup started/finished)
    server       Back Up Now requests for server-side configs (the server's own runner)
    agents       agent keys revoked by another process (``{"type": "revoked", "agentId"}``), so
                 that every process drops its cached copy (with Redis; see ``agent_registry``)

Events are JSON objects with a ``type``. Delivery is at most once and only to subscribers that are
connected at the time: whatever must not be lost (a run request) is also kept in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.subscriber import Subscriber

from backend.services.clock import iso, utcnow
from backend.settings import Settings

__all__ = ["AGENTS_CHANNEL", "SERVER_CHANNEL", "LiveEvents", "agent_channel", "user_channel"]

log = logging.getLogger("backapp.live")

SERVER_CHANNEL = "server"
AGENTS_CHANNEL = "agents"
PUBLISH_NOW_TIMEOUT = 5.0
"""Seconds :meth:`LiveEvents.publish_now` waits for the backend before giving up."""
MAX_BACKLOG = 1000
"""Events held per slow subscriber (a page on a bad link) before the oldest are dropped."""
MAX_OUTBOX = 10_000
"""Events waiting to be published (the backend is slow or down) before new ones are dropped."""


def agent_channel(agent_id: str | uuid.UUID) -> str:
    return f"agent:{agent_id}"


def user_channel(user_id: str | uuid.UUID) -> str:
    return f"user:{user_id}"


def _backend(settings: Settings) -> ChannelsBackend:
    if settings.redis_url:
        try:
            from litestar.channels.backends.redis import RedisChannelsPubSubBackend
            from redis.asyncio import Redis
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "BACKAPP_REDIS_URL is set but the redis package is missing: in the server's "
                'checkout, pip install -e ".[redis]" (or pip install redis)'
            ) from None

        return RedisChannelsPubSubBackend(
            redis=Redis.from_url(settings.redis_url), key_prefix="BACKAPP_CHANNELS"
        )
    return MemoryChannelsBackend()


class LiveEvents:
    """Publish and subscribe; started and stopped with the server process (``Runtime``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kind = "redis" if settings.redis_url else "memory"
        self.plugin = ChannelsPlugin(
            backend=_backend(settings),
            arbitrary_channels_allowed=True,
            subscriber_max_backlog=MAX_BACKLOG,
            subscriber_backlog_strategy="dropleft",
        )
        self._started = False
        self._outbox: asyncio.Queue[tuple[bytes, list[str]]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if not self._started:
            await self.plugin.__aenter__()
            self._loop = asyncio.get_running_loop()
            self._outbox = asyncio.Queue(maxsize=MAX_OUTBOX)
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            if self._outbox is not None and self._sender is not None:
                try:  # what was published before the stop still goes out
                    await asyncio.wait_for(self._outbox.join(), 5)
                except TimeoutError:
                    log.warning("live events still unsent at shutdown were dropped")
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
            self._outbox = self._sender = None
            await self.plugin.__aexit__(None, None, None)

    async def _send_loop(self) -> None:
        """Hand events to the backend one by one. Unlike the plugin's own publisher, a failed
        publish (Redis restarting) is logged and dropped, and the next one is tried."""
        assert self._outbox is not None
        while True:
            data, channels = await self._outbox.get()
            try:
                await self.plugin.wait_published(data, channels)
            except Exception as exc:
                log.warning("could not publish a live event (%s); it was dropped", exc)
            finally:
                self._outbox.task_done()

    def publish(self, event: dict[str, Any], *channels: str) -> None:
        """Queue ``event`` for ``channels``; returns at once. Never raises: a live update is a
        nicety, and the request that caused it must not fail because of it."""
        if not self._started or not channels or self._outbox is None:
            return
        data = json.dumps(event, separators=(",", ":")).encode()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop or self._loop is None:
            self._enqueue(data, list(channels))
            return
        # The periodic rounds run on a thread of their own; the outbox belongs to the server's loop.
        with contextlib.suppress(RuntimeError):  # that loop is closing: the event is dropped
            self._loop.call_soon_threadsafe(self._enqueue, data, list(channels))

    def _enqueue(self, data: bytes, channels: list[str]) -> None:
        if self._outbox is None:
            return
        try:
            self._outbox.put_nowait((data, channels))
        except asyncio.QueueFull:
            log.warning("too many live events waiting to be published; one was dropped")

    async def publish_now(self, event: dict[str, Any], *channels: str) -> bool:
        """Publish ``event`` and wait until the backend took it (with Redis: the other processes'
        subscriptions have it), for what must not lag behind the request that caused it (a
        revoked key). False, logged, if it could not be published."""
        if not self._started or not channels:
            return False
        data = json.dumps(event, separators=(",", ":")).encode()
        try:
            await asyncio.wait_for(
                self.plugin.wait_published(data, list(channels)), PUBLISH_NOW_TIMEOUT
            )
        except Exception as exc:
            log.warning("could not publish a live event (%s)", exc)
            return False
        return True

    def to_user(self, user_id: str | uuid.UUID, event: dict[str, Any]) -> None:
        self.publish(event, user_channel(user_id))

    def to_agent(self, agent_id: str | uuid.UUID, event: dict[str, Any]) -> None:
        self.publish(event, agent_channel(agent_id))

    def agent_log(
        self,
        user_id: uuid.UUID,
        agent_id: uuid.UUID,
        agent_name: str,
        level: str,
        message: str,
        metadata: dict[str, Any] | None,
    ) -> None:
        """An agent's log line, for the owner's open pages (metadata only names the backup)."""
        event: dict[str, Any] = {
            "type": "log",
            "agentId": str(agent_id),
            "agentName": agent_name,
            "level": level,
            "message": message[:2000],
            "timestamp": iso(utcnow()),
        }
        for key in ("logId", "configId"):
            value = (metadata or {}).get(key)
            if isinstance(value, str) and len(value) <= 64:
                event[key] = value
        self.to_user(user_id, event)

    def backup_changed(self, row: dict[str, Any], status: str, error: str | None = None) -> None:
        """A backup started or ended (``row``: a backup log's ``id``, ``user``, ``config`` and
        ``agent``), for the owner's open pages."""
        self.to_user(
            row["user"],
            {
                "type": "backup",
                "backupId": str(row["id"]),
                "configId": str(row["config"]) if row["config"] else None,
                "agentId": str(row["agent"]) if row["agent"] else None,
                "status": status,
                "error": error,
            },
        )

    @asynccontextmanager
    async def subscription(self, *channels: str) -> AsyncIterator[Subscriber]:
        """Subscribe for the duration of the block. The unsubscribe is shielded from cancellation
        (a page that closes cancels its stream), so no subscription is left behind in Redis."""
        subscriber = await self.plugin.subscribe(list(channels))
        try:
            yield subscriber
        finally:
            with anyio.CancelScope(shield=True):
                await self.plugin.unsubscribe(subscriber, list(channels))


def decode(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
