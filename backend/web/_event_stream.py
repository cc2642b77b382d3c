"""``GET /events``: the signed-in user's live events as server-sent events, for ``live.js``.

Each event is one ``data:`` line of JSON with a ``type``: ``progress`` (a running backup's files,
bytes, rate, ETA), ``log`` (an agent's log line), ``backup`` (a backup started or finished) and
``runRequest`` (Back Up Now was asked). Only the user's own channel is subscribed, so nobody sees
another user's events. A comment line every ``KEEPALIVE_SECONDS`` keeps proxies from closing the
stream; the session is re-checked as often, and the stream ends once it is no longer valid.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from backend.api.deps import SESSION_COOKIE, ServicesDep
from backend.services import Services
from backend.services.pubsub import user_channel
from backend.web._auth import optional_user
from backend.web._render import SECURITY_HEADERS

__all__ = ["events"]

KEEPALIVE_SECONDS = 15.0


async def _stream(
    services: Services, user_id: Any, session: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)

    async def collect(event: bytes) -> None:
        if queue.full():  # a stalled page: drop the oldest rather than grow without bound
            queue.get_nowait()
        queue.put_nowait(event)

    async with services.live.subscription(user_channel(user_id)) as subscriber:
        async with subscriber.run_in_background(collect, join=False):
            yield ServerSentEventMessage(data=None, comment="connected", retry=3000)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    if await services.accounts.user_for_session(session) is None:
                        return
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                    continue
                yield ServerSentEventMessage(data=event.decode())


@get("/events", include_in_schema=False, name="events")
async def events(request: Request[Any, Any, Any], services: ServicesDep) -> Response[Any]:
    user = await optional_user(request, services)
    headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}
    if user is None:
        return Response(
            "sign in first", status_code=401, media_type=MediaType.TEXT, headers=headers
        )
    session = request.cookies.get(SESSION_COOKIE)
    return ServerSentEvent(_stream(services, user.id, session), headers=headers)
