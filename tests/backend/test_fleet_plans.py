"""SQLite's plans for the dashboard's agent pages at fleet size (issue 17): SQLite picks an index
from ``sqlite_stat1`` (after ``ANALYZE``), which does not say that one-shot agents are rare; the
page of silent one-shot agents must still be a range of the ``("user", mode, last_seen)`` index,
not a walk of the list order over every agent of the owner (26-30 ms for no rows at 10,000
agents). PostgreSQL plans by its own statistics (most common values), so this is SQLite's test.

Real app, real SQLite (``client``'s ``db_url``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.agents.tables import Agent
from backend.services import Services
from tests.support.api import ApiClient
from tests.support.fleet import seed_fleet
from tests.support.queries import count_queries


async def test_the_page_of_silent_one_shot_agents_is_a_range_of_the_mode_index(
    client: ApiClient, services: Services
) -> None:
    if getattr(Agent._meta.db, "engine_type", "") != "sqlite":
        pytest.skip("PostgreSQL plans by its statistics; this is SQLite's plan")
    await client.signup()
    me = await services.accounts.user_for_session(client.raw.cookies["backapp_session"])
    assert me is not None
    now = datetime.now(UTC)
    await seed_fleet(me.id, now=now - timedelta(days=2), agents=300, configs=300)
    await Agent.raw("ANALYZE")
    with count_queries() as log:
        briefs = await services.agents.briefs(
            me, silent_since=now - timedelta(hours=1), oneshot=True, marked=True, limit=20
        )
    assert briefs == []
    [statement] = [s for s in log.statements if "backapp_agent" in s and "LIMIT" in s]
    plan = await Agent.raw(f"EXPLAIN QUERY PLAN {statement}")
    assert any("backapp_agent_user_mode_seen" in str(row["detail"]) for row in plan), plan
