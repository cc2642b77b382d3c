"""``GET /api/agent/ws``: the WebSocket an agent keeps open to hear of Back Up Now at once.

On connect (``X-Agent-API-Key`` header, checked through the same key registry as every agent
request) the server sends ``{"type": "hello", "agent": {…}}``, then every pending request as
``{"type": "run", …}`` and every pending restore as ``{"type": "restore", "restoreId": …}``, then
each new request as it is made (through the channels layer, so the
request may be made on any server process). The agent may send ``{"type": "ping"}`` (answered with
``{"type": "pong"}``; it also counts as a heartbeat) and ``{"type": "progress", …}`` events.

A missing, unknown or revoked key: an ``error`` message, then the socket closes with code 4401
(4429 when rate limited). A key revoked while connected closes the socket the same way within
``REVALIDATE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import anyio
import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from backend.api.guards import check_json_depth
from backend.errors import DomainError, InvalidInput, NotAuthenticated, RateLimited
from backend.run_schemas import (
    ProgressRequest,
)
from backend.services import AgentIdentity, Services
from backend.services.pubsub import agent_channel
from backend.services.restore_jobs import restore_message
from backend.services.runs import run_message

__all__ = ["serve_agent_socket"]

log = logging.getLogger("backapp.agent_ws")

REVALIDATE_SECONDS = 15.0
MAX_MESSAGE = 64 * 1024
CLOSE_UNAUTHORIZED = 4401
CLOSE_RATE_LIMITED = 4429


def _identity(message: dict[str, Any]) -> tuple[str, str] | None:
    """What makes a run or restore message the same one: its type and its request's id."""
    kind = message.get("type")
    if kind == "run":
        return ("run", str(message.get("runRequestId")))
    if kind == "restore":
        return ("restore", str(message.get("restoreId")))
    return None


def _error(exc: DomainError) -> dict[str, Any]:
    return {"type": "error", "status": exc.status_code, "error": exc.code, "detail": exc.detail}


class _Socket:
    """One socket, sends serialised (the channel's background task and the reader both send)."""

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self.socket = socket
        self._lock = asyncio.Lock()
        self._sent: set[tuple[str, str]] = set()

    async def send(self, message: dict[str, Any] | bytes) -> None:
        text = message.decode() if isinstance(message, bytes) else json.dumps(message)
        async with self._lock:
            await self.socket.send_text(text)

    async def send_backlog(self, messages: list[dict[str, Any]]) -> None:
        """The pending requests read after subscribing; the channel may carry them too."""
        for message in messages:
            identity = _identity(message)
            if identity is not None:
                self._sent.add(identity)
            await self.send(message)

    async def forward(self, event: bytes) -> None:
        """A channel event to the agent, unless the backlog already carried it; a socket that
        went away meanwhile is not an error."""
        if self._sent:
            try:
                identity = _identity(json.loads(event))
            except (ValueError, AttributeError):
                identity = None
            if identity is not None and identity in self._sent:
                self._sent.discard(identity)
                return
        try:
            await self.send(event)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def close(self, code: int, exc: DomainError) -> None:
        try:
            await self.send(_error(exc))
            async with self._lock:
                await self.socket.close(code=code, reason=exc.detail[:100])
        except (WebSocketDisconnect, RuntimeError):
            pass


async def _authenticate(services: Services, key: str | None) -> AgentIdentity:
    return await services.registry.authenticate(key)


async def serve_agent_socket(socket: WebSocket[Any, Any, Any], services: Services) -> None:
    key = socket.headers.get("x-agent-api-key")
    conn = _Socket(socket)
    try:
        agent = await _authenticate(services, key)
    except (NotAuthenticated, RateLimited) as exc:
        await socket.accept()
        code = CLOSE_RATE_LIMITED if isinstance(exc, RateLimited) else CLOSE_UNAUTHORIZED
        await conn.close(code, exc)
        return
    await socket.accept()
    try:
        async with services.live.subscription(agent_channel(agent.id)) as subscriber:
            # Subscribed first, then the backlog: a request made in between is in both, and is
            # sent once (``forward`` drops what the backlog carried), never lost.
            await conn.send({"type": "hello", "agent": {"id": str(agent.id), "name": agent.name}})
            backlog = [
                run_message(ref.id, ref.config_id)
                for ref in await services.runs.pending_for_agent(agent)
            ]
            backlog += [restore_message(i) for i in await services.restore_jobs.pending_ids(agent)]
            await conn.send_backlog(backlog)
            async with (
                subscriber.run_in_background(conn.forward, join=False),
                anyio.create_task_group() as tg,
            ):

                async def read() -> None:
                    try:
                        await _read_loop(conn, agent, key, services)
                    finally:
                        tg.cancel_scope.cancel()

                async def watch() -> None:
                    while True:
                        await anyio.sleep(REVALIDATE_SECONDS)
                        try:
                            await _authenticate(services, key)
                        except RateLimited:
                            continue
                        except NotAuthenticated as exc:
                            await conn.close(CLOSE_UNAUTHORIZED, exc)
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(read)
                tg.start_soon(watch)
    except WebSocketDisconnect:
        pass
    finally:
        if socket.connection_state != "disconnect":
            try:
                await socket.close()
            except (WebSocketDisconnect, RuntimeError):
                pass


async def _read_loop(
    conn: _Socket, agent: AgentIdentity, key: str | None, services: Services
) -> None:
    while True:
        try:
            raw = await conn.socket.receive_data(mode="text")
        except WebSocketDisconnect:
            return
        # Every message counts against the key's rate limit, as a request would, and a key
        # revoked meanwhile ends the socket.
        try:
            await _authenticate(services, key)
        except RateLimited as exc:
            await conn.send(_error(exc))
            continue
        except NotAuthenticated as exc:
            await conn.close(CLOSE_UNAUTHORIZED, exc)
            return
        if len(raw) > MAX_MESSAGE:
            await conn.send(
                {
                    "type": "error",
                    "status": 413,
                    "error": "payload_too_large",
                    "detail": "at most 64 KiB per message",
                }
            )
            continue
        try:
            check_json_depth(raw)
            message = json.loads(raw)
        except InvalidInput as exc:
            await conn.send(_error(exc))
            continue
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await conn.send(
                {
                    "type": "error",
                    "status": 400,
                    "error": "bad_request",
                    "detail": 'each message must be a JSON object with a "type"',
                }
            )
            continue
        kind = message.pop("type")
        try:
            if kind == "ping":
                await services.registry.heartbeat(agent, None, None)
                await conn.send({"type": "pong"})
            elif kind == "progress":
                try:
                    req = msgspec.convert(message, ProgressRequest)
                except msgspec.ValidationError as exc:
                    await conn.send(
                        {
                            "type": "error",
                            "status": 400,
                            "error": "bad_request",
                            "detail": f"progress: {exc}",
                        }
                    )
                    continue
                await services.progress.record(agent, req)
            else:
                await conn.send(
                    {
                        "type": "error",
                        "status": 400,
                        "error": "bad_request",
                        "detail": f"unknown message type {kind!r}: send ping or progress",
                    }
                )
        except DomainError as exc:
            await conn.send(_error(exc))
