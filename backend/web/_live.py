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
from backend.services.live import user_channel
from backend.web import _format
from backend.web._auth import optional_user
from backend.web._render import SECURITY_HEADERS
from desktop_agent.engine.schedule import Schedule, ScheduleError

__all__ = ["events", "progress_percent", "progress_text", "schedule_text"]

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


# --- how progress and schedules read on the pages (live.js builds the same text) ----------------

_PHASES = {
    "scanning": "Scanning",
    "archiving": "Archiving",
    "uploading": "Uploading",
    "finishing": "Finishing",
}


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def progress_percent(progress: dict[str, Any] | None) -> int | None:
    """0–100 from bytes (else files), or None when the total is not known yet (the scan)."""
    if not progress or progress.get("phase") == "scanning":
        return None
    for done_key, total_key in (("bytesDone", "bytesTotal"), ("filesDone", "filesTotal")):
        done, total = _count(progress.get(done_key)), _count(progress.get(total_key))
        if done is not None and total:
            return max(0, min(100, int(done * 100 / total)))
    return None


def progress_text(progress: dict[str, Any] | None) -> str:
    """``Uploading · 120 / 300 files · 4.8 MiB / 11.4 MiB · 1.2 MiB/s · about 6 s left``; while
    scanning, what was found so far: ``Scanning · 12,345 files · 3.1 GiB``."""
    if not progress:
        return ""
    phase = progress.get("phase")
    parts = [_PHASES.get(str(phase), "Running")]
    if phase == "scanning":
        found, size = _count(progress.get("filesTotal")), _count(progress.get("bytesTotal"))
        if found is not None:
            parts.append(f"{found:,} files")
        if size is not None:
            parts.append(_format.filesize(size))
        return " · ".join(parts)
    files, files_total = _count(progress.get("filesDone")), _count(progress.get("filesTotal"))
    if files is not None:
        parts.append(f"{files:,} / {files_total:,} files" if files_total else f"{files:,} files")
    done, total = _count(progress.get("bytesDone")), _count(progress.get("bytesTotal"))
    if done is not None:
        parts.append(
            f"{_format.filesize(done)} / {_format.filesize(total)}"
            if total
            else _format.filesize(done)
        )
    rate = _count(progress.get("rate"))
    if rate:
        parts.append(f"{_format.filesize(int(rate))}/s")
    eta = _count(progress.get("eta"))
    if eta is not None:
        parts.append(f"about {_format.duration(int(eta) * 1000)} left")
    return " · ".join(parts)


def schedule_text(schedule: Any) -> str:
    """A config's ``options.schedule`` as people read it; ``Manual only`` when there is none."""
    try:
        parsed = Schedule.parse(schedule)
    except ScheduleError:
        return "Invalid schedule"
    return parsed.describe() if parsed is not None else "Manual only"
