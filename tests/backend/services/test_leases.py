"""Leases on the real database (SQLite and PostgreSQL): one holder at a time, lapse on expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from backend.services.clock import utcnow
from backend.services.leases import LeaseService
from tests.support.api import ApiClient


async def test_one_holder_then_lapse_then_takeover(client: ApiClient) -> None:
    leases = LeaseService()
    t0 = utcnow()
    first = await leases.acquire("config:x", "agent A", 60, now=t0)
    assert first is not None
    assert await leases.acquire("config:x", "agent B", 60, now=t0 + timedelta(seconds=30)) is None
    current = await leases.current("config:x", now=t0 + timedelta(seconds=30))
    assert current is not None and current["holder"] == "agent A"

    # A renewed lease stays held past its first expiry.
    renewed = await leases.renew("config:x", first.token, 60, now=t0 + timedelta(seconds=50))
    assert renewed is not None
    assert await leases.acquire("config:x", "agent B", 60, now=t0 + timedelta(seconds=70)) is None

    # A holder that stops renewing (crashed) loses it once it lapses; its token is then useless.
    later = t0 + timedelta(seconds=111)
    second = await leases.acquire("config:x", "agent B", 60, now=later)
    assert second is not None and second.token != first.token
    assert await leases.renew("config:x", first.token, 60, now=later) is None
    await leases.release("config:x", first.token)  # the old holder cannot free B's lease
    assert await leases.current("config:x", now=later) is not None
    await leases.release("config:x", second.token)
    await leases.release("config:x", second.token)  # idempotent
    assert await leases.current("config:x", now=later) is None
    assert await leases.acquire("config:x", "agent C", 60, now=later) is not None


async def test_concurrent_contenders_exactly_one_wins(client: ApiClient) -> None:
    leases = LeaseService()
    now = utcnow()
    for name in ("server:fresh", "server:lapsed"):
        if name == "server:lapsed":
            assert await leases.acquire(name, "old", 1, now=now - timedelta(seconds=10))
        grants = await asyncio.gather(
            *(leases.acquire(name, f"p{i}", 30, now=now) for i in range(12))
        )
        assert sum(g is not None for g in grants) == 1, name


async def test_independent_names_do_not_block_each_other(client: ApiClient) -> None:
    leases = LeaseService()
    assert await leases.acquire("config:a", "x", 30) is not None
    assert await leases.acquire("config:b", "x", 30) is not None
