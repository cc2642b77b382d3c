"""The heartbeat is the server's hottest path: what it reads besides the pending requests goes
through the agent registry's own connection, not a Piccolo statement (which on SQLite opens a
connection and a thread each: three of them made a heartbeat about four times dearer)."""

from __future__ import annotations

from backend.services import Services
from tests.support.api import ApiClient
from tests.support.queries import count_queries

PENDING_SETS = ("backapp_run_request", "backapp_restore_job")
"""The only tables a heartbeat may read through Piccolo: the shared pending sets, re-read about
once a second whatever the fleet."""


async def test_a_heartbeat_reads_limits_and_compaction_without_a_piccolo_statement(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    agent_id, key = await client.register_agent("laptop")
    r = await client.patch(
        f"/api/agents/{agent_id}", json={"limits": {"download": 8}, "parallelBackups": 2}
    )
    assert r.status_code == 200, r.text
    limited = await client.create_config(agent_id, options={"limits": {"upload": 2}})
    await client.create_config(agent_id, name="Plain")
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.status_code == 200, beat.text
    assert beat.json()["compact"] is None

    with count_queries(own_task_only=True) as log:
        beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.status_code == 200, beat.text
    assert [s for s in log.statements if not any(t in s for t in PENDING_SETS)] == []
    answer = beat.json()
    assert answer["limits"]["download"] == 8 and answer["parallelBackups"] == 2
    assert answer["configLimits"] == {limited["id"]: limited["options"]["limits"]}
