"""The periodic rounds run off the loop that serves requests, and their PostgreSQL lock dies with
the process that holds it (issue 17). Real app, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from backend.app import create_app
from backend.services import Services
from backend.services.alerts import AlertReport
from backend.services.round_thread import advisory_key
from backend.services.tasks import PeriodicTasks
from backend.settings import Settings


async def test_a_long_round_does_not_hold_up_requests(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that keeps its thread busy for seconds (here: a blocking sleep, as a CPU-bound
    evaluation of a large fleet would) while a request comes in: the request is answered at once,
    and the round ran on another thread than the server's loop."""
    inside = threading.Event()
    threads: list[int] = []
    entered: list[float] = []

    async def busy(now: datetime) -> AlertReport:
        threads.append(threading.get_ident())
        entered.append(time.perf_counter())
        inside.set()
        time.sleep(4.0)  # noqa: ASYNC251 - on purpose: it holds whatever loop runs it
        return AlertReport()

    monkeypatch.setattr(services.alerts, "evaluate", busy)
    app = create_app(settings, services)
    await app.state.runtime.start()
    try:
        await asyncio.to_thread(inside.wait, 30)
        assert inside.is_set()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as client:
            r = await client.get("/api/health")
            answered = time.perf_counter() - entered[0]
        assert r.status_code == 200
        # The round holds its loop for 4 s from ``entered``; the answer comes well before that.
        assert answered < 2.5, f"a request was answered {answered:.1f} s into the round"
        assert threads and threads[0] != threading.get_ident()
    finally:
        await app.state.runtime.stop()


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys, asyncpg

    async def main():
        connection = await asyncpg.connect(sys.argv[1])
        assert await connection.fetchval("SELECT pg_try_advisory_lock($1)", int(sys.argv[2]))
        print("held", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_a_dead_holder_frees_the_postgres_lock_at_once(
    settings: Settings, services: Services
) -> None:
    """Another process holds ``server:alerts`` (PostgreSQL's advisory lock): this one skips the
    round. Once that process is killed mid-round, the lock is free at once, with no lease to lapse."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("the advisory lock is PostgreSQL's; SQLite's lease lapses (tested elsewhere)")
    app = create_app(settings, services)  # binds the tables to the app's engine
    await app.state.runtime.start()
    # The runtime's start-up round takes the same lock: the holder below must not meet it.
    await services.tasks.started()
    tasks = PeriodicTasks(settings, services.storage, holder="this process")
    dsn = settings.database_url.replace("postgres://", "postgresql://", 1)
    holder = subprocess.Popen(  # noqa: ASYNC220 - a spawn; its output is read in a thread
        [sys.executable, "-c", _HOLDER, dsn, str(advisory_key("server:alerts"))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    ran: list[Any] = []

    async def work() -> str:
        ran.append(1)
        return "ran"

    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        assert await tasks._guarded("alerts", work) is None
        assert ran == []
        holder.kill()
        holder.wait(10)
        deadline = time.monotonic() + 5.0
        result = None
        while result is None and time.monotonic() < deadline:
            result = await tasks._guarded("alerts", work)
            if result is None:
                await asyncio.sleep(0.1)
        assert result == "ran"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        await app.state.runtime.stop()
