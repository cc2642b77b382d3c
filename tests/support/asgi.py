"""A WebSocket client that speaks ASGI straight to the app, for the in-process integration tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from litestar import Litestar


class AsgiSocket:
    """A WebSocket client speaking ASGI straight to the app (httpx has no WebSockets)."""

    def __init__(self, app: Litestar, headers: dict[str, str]) -> None:
        self.app = app
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("testserver.local", 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": "/api/agent/ws",
            "raw_path": b"/api/agent/ws",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "subprotocols": [],
            "state": {},
        }
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsgiSocket:
        await self.incoming.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(self.app(self.scope, self.incoming.get, self.outgoing.put))  # type: ignore[arg-type]
        first = await self.next_raw()
        assert first["type"] == "websocket.accept", first
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def next_raw(self, wait: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.outgoing.get(), wait)

    async def receive(self, wait: float = 5) -> dict[str, Any]:
        message = await self.next_raw(wait)
        assert message["type"] == "websocket.send", message
        return dict(json.loads(message["text"]))

    async def send(self, value: dict[str, Any]) -> None:
        await self.incoming.put({"type": "websocket.receive", "text": json.dumps(value)})
