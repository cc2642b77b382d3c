"""Plans at fleet size that statistics must not break (issue 17).

SQLite's plans for the dashboard's agent pages: SQLite picks an index
from ``sqlite_stat1`` (after ``ANALYZE``), which does not say that one-shot agents are rare; the
page of silent one-shot agents must still be a range of the ``("user", mode, last_seen)`` index,
not a walk of the list order over every agent of the owner (26-30 ms for no rows at 10,000
agents). PostgreSQL plans by its own statistics (most common values), so this is SQLite's test.

The alert round's statements over open alerts and backups, with statistics taken before the first
alert (as after an installation, until autovacuum analyses again): on both databases.

Real app, real SQLite and PostgreSQL (``client``'s ``db_url``)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.agents.tables import Agent
from backend.backups.tables import Alert
from backend.services import Services
from backend.services.drill_alerts import final_failures
from tests.support.api import ApiClient, signed_in_user
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


CONFIGS, PER_CONFIG, EXAMINED = 100, 30, 5


def _rows_touched(node: dict[str, Any]) -> float:
    """Rows a plan node and those under it produced or threw away, over all their loops
    (``EXPLAIN (ANALYZE, FORMAT JSON)`` on PostgreSQL): the work, whatever the plan's shape."""
    loops = node.get("Actual Loops", 1)
    own = node.get("Actual Rows", 0) * loops
    own += sum(node.get(k, 0) for k in node if k.startswith("Rows Removed by"))
    return own + sum(_rows_touched(child) for child in node.get("Plans", []))


async def test_open_failure_alerts_of_a_batch_stay_linear_with_statistics_from_before_the_alerts(
    client: ApiClient, services: Services
) -> None:
    """The alert round reads the open ``backup_failed`` alerts of the backups of the configs it
    looked at. Its statistics taken before any alert existed (a new installation, a backlog's
    first minutes before autovacuum), PostgreSQL believed the open alerts to be one row and
    compared each open alert with each backup of the batch (16-22 s alert rounds at 25,000
    configs). Whatever the plan, the statement must touch about as many rows as there are open
    alerts and backups of the batch, not their product."""
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=CONFIGS, backups_per_config=PER_CONFIG)
    await Alert.raw("ANALYZE")  # the statistics say: no alerts at all
    examined = fleet.config_ids[:EXAMINED]
    # An open alert on every 4th backup; the backups come config by config.
    failed = fleet.backup_ids[::4]
    batch = EXAMINED * PER_CONFIG
    mine = {f"backup:{b}" for b in fleet.backup_ids[:batch:4]}
    for start in range(0, len(failed), 200):
        await Alert.insert(
            *[
                Alert(
                    id=uuid.uuid4(),
                    user=me.id,
                    kind="backup_failed",
                    subject=f"backup:{backup_id}",
                    message="failed",
                    created_at=now,
                )
                for backup_id in failed[start : start + 200]
            ]
        )
    with count_queries() as log:
        _, open_failed = await final_failures(now, examined)
    assert {row["subject"] for row in open_failed} == mine
    [statement] = [
        s for s in log.statements if 'FROM "backapp_alert"' in s and str(examined[0]) in s
    ]
    if getattr(Alert._meta.db, "engine_type", "") == "postgres":
        [[plan]] = [
            json.loads(row["QUERY PLAN"])
            for row in await Alert.raw(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}")
        ]
        # Open alerts and backups of the batch (750 + 150): their product would be 112,500.
        assert _rows_touched(plan["Plan"]) <= 4 * (len(failed) + batch), plan
    else:
        plan = await Alert.raw(f"EXPLAIN QUERY PLAN {statement}")
        details = [str(row["detail"]) for row in plan]
        # Every read of the backups is a search by an index, never a walk of the table.
        assert not any(d.startswith("SCAN b") or "SCAN backapp_backup_log" in d for d in details)
