"""The server's periodic tasks end to end: real ``backapp serve`` processes, a real S3 endpoint on
loopback (moto) and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.support.server_process import LiveServer, LiveServerFactory


def sql(url: str, statement: str, *args: Any) -> Any:
    async def go() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    return asyncio.run(go())


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def agent_backup(server: LiveServer, key: str, config_id: str, name: str, body: bytes) -> str:
    agent = server.agent_client(key)
    start = agent.post(
        "/api/agent/backup/start",
        json={"configId": config_id, "filename": name, "filesize": len(body)},
    )
    assert start.status_code == 200, start.text
    upload = start.json()["upload"]
    assert httpx.put(upload["url"], content=body, headers=upload["headers"]).status_code == 200
    done = agent.post(
        "/api/agent/backup/complete",
        json={"logId": start.json()["logId"], "status": "completed", "size": len(body)},
    )
    assert done.status_code == 200, done.text
    return str(start.json()["logId"])


def test_retention_in_a_running_server_deletes_exactly_the_expired_objects(
    live_server_factory: LiveServerFactory, pg_cluster: Any, s3_server: Any, s3_bucket: str
) -> None:
    url = pg_cluster.create_database("e2e_retention")
    server = live_server_factory.start(
        database_url=url,
        s3=s3_server,
        bucket=s3_bucket,
        env={"BACKAPP_TASK_INTERVAL": "0.5"},
    )
    owner = server.owner()
    agent_id, key = owner.register_agent()
    week = owner.create_config(agent_id, name="week", options={"retentionDays": 7})
    keep = owner.create_config(agent_id, name="keep", options={"retentionDays": 0})
    ids = {
        name: agent_backup(server, key, cfg["id"], f"{name}.tar.gz", name.encode() * 100)
        for name, cfg in (
            ("a30", week),
            ("b10", week),
            ("c3", week),
            ("d0", week),
            ("k99", keep),
        )
    }
    ages = {"a30": 30, "b10": 10, "c3": 3, "d0": 0, "k99": 99}
    for name, days in ages.items():
        sql(
            url,
            "UPDATE backapp_backup_log SET started_at = now() - make_interval(days => $1), "
            "completed_at = now() - make_interval(days => $1) + interval '1 minute' "
            "WHERE id = $2::uuid",
            days,
            ids[name],
        )
    # The history was rewritten behind the server's back: the rounds must look at it again, as
    # they do when a backup ends (each config remembers when it next needs a look).
    sql(
        url,
        "UPDATE backapp_backup_config"
        " SET retention_due_at = NULL, alert_due_at = NULL, revision = revision + 1",
    )

    def statuses() -> dict[str, str]:
        return {b["id"]: b["status"] for b in owner.backups(limit=50)}

    wait_for(
        lambda: statuses()[ids["a30"]] == "expired" and statuses()[ids["b10"]] == "expired",
        30,
        "retention to expire the old backups",
    )
    time.sleep(1.5)  # a few more rounds: nothing else may go
    final = statuses()
    assert {n: final[ids[n]] for n in ids} == {
        "a30": "expired",
        "b10": "expired",
        "c3": "completed",
        "d0": "completed",
        "k99": "completed",
    }
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    archives = sorted(
        item["Key"].rsplit("/", 1)[1]
        for item in listed
        if item["Key"].startswith("users/") and "/meta/" not in item["Key"]
    )
    assert archives == ["c3.tar.gz", "d0.tar.gz", "k99.tar.gz"]
    # The catalog round (after maintenance, in the same round) removed the metadata objects of
    # the expired backups; those of the others stay beside them.
    metas = sorted(item["Key"].rsplit("/", 1)[1] for item in listed if "/meta/" in item["Key"])
    assert metas == sorted(f"{ids[n]}.json" for n in ("c3", "d0", "k99"))
    detail = owner.request("GET", f"/api/backups/{ids['a30']}").json()["backup"]
    assert detail["deletedAt"] is not None


def test_two_servers_on_one_database_run_each_slot_once(
    live_server_factory: LiveServerFactory,
    pg_cluster: Any,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    url = pg_cluster.create_database("e2e_two_schedulers")
    roots = tmp_path / "srv"
    data = roots / "data"
    data.mkdir(parents=True)
    (data / "file.txt").write_text("served from the server itself\n")
    env = {"BACKAPP_TASK_INTERVAL": "0.3", "BACKAPP_SERVER_SOURCE_ROOTS": str(roots)}
    a = live_server_factory.start(database_url=url, s3=s3_server, bucket=s3_bucket, env=env)
    b = live_server_factory.start(database_url=url, s3=s3_server, bucket=s3_bucket, env=env)
    owner = a.owner()
    r = owner.request(
        "POST",
        "/api/configs",
        json={
            "name": "Server files",
            "executionMode": "server",
            "sources": [{"path": str(data)}],
            "options": {"schedule": {"cron": "* * * * *"}},
        },
    )
    assert r.status_code == 201, r.text
    config_id = r.json()["config"]["id"]
    # Created ten minutes ago: one catch-up run is due at once (not ten).
    sql(
        url,
        "UPDATE backapp_backup_config SET created_at = now() - interval '10 minutes' "
        "WHERE id = $1::uuid",
        config_id,
    )

    def runs() -> list[dict[str, Any]]:
        return owner.backups(configId=config_id, limit=50)

    first = wait_for(lambda: [x for x in runs() if x["status"] != "running"], 30, "the first run")
    assert [(x["status"], x["trigger"]) for x in first] == [("completed", "schedule")], first

    # The next minute's slot: wait past it, and a little more for both servers to poll.
    now = datetime.now(UTC)
    time.sleep(60 - now.second - now.microsecond / 1e6 + 4)
    wait_for(lambda: len([x for x in runs() if x["status"] == "completed"]) >= 2, 30, "slot 2")
    time.sleep(2)
    done = runs()
    assert [(x["status"], x["trigger"]) for x in done] == [("completed", "schedule")] * 2, [
        (x["startedAt"][11:], x["filename"][14:]) for x in done
    ]
    minutes = {x["startedAt"][:16] for x in done}
    assert len(minutes) == 2

    # Back Up Now for a server-side config: taken by exactly one of the two servers.
    requested = owner.request("POST", f"/api/configs/{config_id}/run")
    assert requested.status_code == 202, requested.text
    wait_for(
        lambda: any(x["trigger"] == "request" and x["status"] == "completed" for x in runs()),
        30,
        "the requested run",
    )
    time.sleep(1)
    assert sum(x["trigger"] == "request" for x in runs()) == 1

    # Who ran what is in the logs of the processes; both took part in the election.
    logs = a.log() + b.log()
    assert "Traceback" not in logs, logs
