"""End to end: ``backapp-agent daemon`` as a subprocess against a real ``backapp serve`` and a real S3
endpoint on loopback (moto server mode).

- A ``* * * * *`` schedule fires and the backup lands in S3 (the agent's schedule record says the
  config has been known for two minutes, so the first slot is already due: no waiting for a minute).
- Back Up Now from the owner's API reaches the daemon over the WebSocket within seconds (the server's
  poll interval is five minutes, so the heartbeat cannot be what carried it).
- With the socket disabled (``--no-socket``) the same request arrives through the heartbeat.
- SIGTERM stops the daemon cleanly.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_process import (
    Agent,
    Daemon,
    extract,
    s3_object,
    setup,
    source_tree,
    wait_for_backup,
)
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory, Owner
from tests.support.trees import extracted_root, snapshot

pytestmark = [pytest.mark.e2e]


def start_server(
    factory: LiveServerFactory, s3: S3Endpoint, bucket: str, poll_interval: int
) -> LiveServer:
    return factory.start(s3=s3, bucket=bucket, env={"BACKAPP_POLL_INTERVAL": str(poll_interval)})


def test_a_schedule_fires_and_the_backup_lands(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = source_tree(tmp_path / "src")
    server = start_server(live_server_factory, s3_server, s3_bucket, poll_interval=30)
    owner, _agent_id, key, [cfg] = setup(
        server,
        {
            "name": "Every minute",
            "sources": [{"path": str(src)}],
            "options": {"schedule": {"cron": "* * * * *"}},
        },
    )
    assert cfg["options"]["schedule"]["cron"] == "* * * * *"
    agent = Agent(tmp_path, server.url, key, TZ="Europe/Paris")
    since = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"configs": {cfg["id"]: {"cron": "* * * * *", "since": since, "lastRun": None}}}
    (tmp_path / "agent-config" / "schedule.json").write_text(json.dumps(record))

    daemon = Daemon(agent)
    try:
        backup = wait_for_backup(owner, lambda b: b["status"] == "completed", daemon)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert backup["trigger"] == "schedule" and backup["attempt"] == 1, backup
    assert backup["configId"] == cfg["id"]
    # the object in S3 is the source tree
    data = s3_object(s3_server, s3_bucket, backup["s3Path"])
    out = extract(data, tmp_path / "out", backup["filename"])
    assert snapshot(extracted_root(out, src)) == snapshot(src)
    finished = [e for e in daemon.events() if e["event"] == "backup_finished"]
    assert finished and finished[0]["configId"] == cfg["id"]
    saved = json.loads((tmp_path / "agent-config" / "schedule.json").read_text())
    assert saved["configs"][cfg["id"]]["lastRun"] is not None
    assert "time zone Europe/Paris" in daemon.output()
    # ``status`` shows the schedule and the next run
    done = agent.run("status", "--json")
    assert done.returncode == 0, done.stderr
    [shown] = json.loads(done.stdout)["configs"]
    assert shown["schedule"] == "Cron * * * * *" and shown["nextRun"].endswith("Z")
    assert shown["lastScheduledRun"] == saved["configs"][cfg["id"]]["lastRun"]
    text = agent.run("status").stdout
    assert "schedule: Cron * * * * * (Europe/Paris)" in text and "next:" in text


def _back_up_now(owner: Owner, config_id: str) -> dict[str, Any]:
    r = owner.request("POST", f"/api/configs/{config_id}/run")
    assert r.status_code == 202, r.text
    return dict(r.json()["runRequest"])


def test_back_up_now_reaches_the_daemon_over_the_websocket_within_seconds(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = source_tree(tmp_path / "src")
    # heartbeats every 5 minutes: only the socket can bring the request in time
    server = start_server(live_server_factory, s3_server, s3_bucket, poll_interval=300)
    owner, _agent_id, key, [cfg] = setup(
        server, {"name": "On demand", "sources": [{"path": str(src)}]}
    )
    agent = Agent(tmp_path, server.url, key)
    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("agent socket connected")
        time.sleep(1.0)  # the first heartbeat has answered
        asked = time.monotonic()
        request = _back_up_now(owner, cfg["id"])
        backup = wait_for_backup(owner, lambda b: b["status"] == "completed", daemon, timeout=30)
        took = time.monotonic() - asked
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert backup["trigger"] == "request", backup
    assert took < 30  # a heartbeat would have needed up to 300 s
    assert request["configId"] == cfg["id"]
    assert "Back Up Now requested" in daemon.output()
    assert "(heartbeat)" not in daemon.output()  # the socket brought it


def test_back_up_now_arrives_through_the_heartbeat_when_the_socket_is_off(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = source_tree(tmp_path / "src")
    server = start_server(live_server_factory, s3_server, s3_bucket, poll_interval=2)
    owner, _agent_id, key, [cfg] = setup(
        server, {"name": "On demand", "sources": [{"path": str(src)}]}
    )
    agent = Agent(tmp_path, server.url, key)
    daemon = Daemon(agent, "--no-socket")
    try:
        daemon.wait_for_line("daemon started")
        _back_up_now(owner, cfg["id"])
        backup = wait_for_backup(owner, lambda b: b["status"] == "completed", daemon, timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert backup["trigger"] == "request", backup
    assert "(heartbeat)" in daemon.output()
    assert "agent socket connected" not in daemon.output()


def test_a_config_whose_lease_is_held_elsewhere_is_not_run(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = source_tree(tmp_path / "src")
    server = start_server(live_server_factory, s3_server, s3_bucket, poll_interval=2)
    owner, _agent_id, key, [cfg] = setup(server, {"name": "Busy", "sources": [{"path": str(src)}]})
    # another process of this agent is running the config: it holds the lease
    other = server.agent_client(key)
    r = other.post("/api/agent/lease", json={"configId": cfg["id"], "ttlSeconds": 120})
    assert r.status_code == 200, r.text
    agent = Agent(tmp_path, server.url, key)
    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("daemon started")
        _back_up_now(owner, cfg["id"])
        daemon.wait_for_line("already running elsewhere", timeout=30)
        assert owner.backups() == []
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert "config is already running on" in daemon.output()
    r = other.post(
        "/api/agent/lease/release",
        json={"configId": cfg["id"], "token": r.json()["lease"]["token"]},
    )
    assert r.status_code == 200, r.text
