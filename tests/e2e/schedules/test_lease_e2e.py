"""End to end: the config lease and live progress with the real ``backapp-agent`` (``run`` and
``daemon`` as subprocesses) against a real ``backapp serve`` and a real S3 endpoint on loopback (moto
server mode).

- ``backapp-agent run`` takes each config's lease: while another process of the same agent holds it
  (taken through the API with the same key), the config is not backed up, the run says why and
  exits 1; once released, the same command backs it up (on SQLite and on PostgreSQL).
- The daemon's multipart backup shows its progress on the owner's live events (``GET /events``)
  while it runs, and the backup JSON drops it once finished.
- A small archive (one PUT, so the server opens the log only when the archive is complete) still
  shows its progress: what was gathered before the log existed is sent as it opens.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_process import (
    Agent,
    Daemon,
    events_of,
    setup,
    source_tree,
    wait_for_backup,
)
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory, Owner

pytestmark = [pytest.mark.e2e]

MIB = 1 << 20


class LiveEvents:
    """The owner's ``GET /events`` stream (server-sent events), read on a thread."""

    def __init__(self, owner: Owner, server: LiveServer) -> None:
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._client = httpx.Client(base_url=server.url, cookies=owner.http.cookies, timeout=60)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.connected.wait(15), "the event stream did not connect"

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/events") as response:
                if response.status_code != 200:
                    return
                for line in response.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("data: "):
                        self.events.append(json.loads(line[len("data: ") :]))
        except Exception:  # closed by ``close`` (or the server went away): stop reading
            return

    def progress_of(self, backup_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "progress" and e["backupId"] == backup_id]

    def close(self) -> None:
        self._client.close()
        self._thread.join(10)


def _lease(client: httpx.Client, config_id: str) -> httpx.Response:
    return client.post("/api/agent/lease", json={"configId": config_id, "ttlSeconds": 120})


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_run_skips_a_config_whose_lease_is_held_and_backs_it_up_once_released(
    database: str,
    request: pytest.FixtureRequest,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    url = None
    if database == "postgres":
        url = request.getfixturevalue("pg_cluster").create_database("e2e_lease_run")
    src = source_tree(tmp_path / "src")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket, database_url=url)
    owner, _agent_id, key, [busy, free] = setup(
        server,
        {"name": "Busy", "sources": [{"path": str(src)}]},
        {"name": "Free", "sources": [{"path": str(src)}]},
    )
    # another process of this same agent (same key) is running "Busy": it holds the lease
    other = server.agent_client(key)
    held = _lease(other, busy["id"])
    assert held.status_code == 200, held.text
    agent = Agent(tmp_path, server.url, key)

    done = agent.run("run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "'Busy' was not backed up: config is already running on " in done.stderr
    [backup] = owner.backups()
    assert backup["configId"] == free["id"] and backup["status"] == "completed"
    assert backup["trigger"] == "manual"
    state = json.loads((tmp_path / "agent-config" / "state.json").read_text())
    assert set(state["configs"]) == {free["id"]}  # nothing ran for "Busy": nothing recorded

    # --json: stdout stays JSON lines; the reason goes to stderr
    done = agent.run("run", "--json", "--config", busy["id"])
    assert done.returncode == 1, done.stdout + done.stderr
    events = events_of(done.stdout)
    assert [e["event"] for e in events] == ["run_started", "run_finished"]
    assert (events[-1]["completed"], events[-1]["failed"]) == (0, 0)
    assert "'Busy' was not backed up: config is already running on " in done.stderr
    assert len(owner.backups()) == 1

    # the other process finishes: the same command now backs it up, and gives the lease back
    released = other.post(
        "/api/agent/lease/release",
        json={"configId": busy["id"], "token": held.json()["lease"]["token"]},
    )
    assert released.status_code == 200, released.text
    done = agent.run("run", "--config", busy["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "was not backed up" not in done.stderr
    [again] = [b for b in owner.backups() if b["configId"] == busy["id"]]
    assert again["status"] == "completed" and again["trigger"] == "manual"
    retaken = _lease(other, busy["id"])
    assert retaken.status_code == 200, retaken.text


def test_the_daemons_multipart_backup_shows_its_progress_live(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):  # 24 MiB that do not compress: five 5 MiB parts
        (src / f"part{i}.bin").write_bytes(random.Random(i).randbytes(4 * MIB))
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_POLL_INTERVAL": "300"}
    )
    owner, _agent_id, key, [cfg] = setup(
        server, {"name": "Big", "sources": [{"path": str(src)}], "options": {"compression": False}}
    )
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
        BACKAPP_AGENT_UPLOAD_CONCURRENCY="1",
    )
    live = LiveEvents(owner, server)
    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("agent socket connected")
        r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
        assert r.status_code == 202, r.text
        backup = wait_for_backup(owner, lambda b: b["status"] == "completed", daemon)
        deadline = time.monotonic() + 10
        while not live.progress_of(backup["id"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        code = daemon.stop()
        live.close()
    assert code == 0, daemon.output()
    assert backup["trigger"] == "request" and backup["size"] > 24 * MIB
    progress = live.progress_of(backup["id"])
    assert progress, f"no progress event; the stream had {live.events}"
    assert all(p["configId"] == cfg["id"] and p["at"] for p in progress)
    assert {p["phase"] for p in progress} <= {"archiving", "uploading"}
    first = progress[0]
    assert first["phase"] == "archiving" and first["filesTotal"] == 6
    assert 0 < first["bytesDone"] < first["bytesTotal"] == 24 * MIB
    # the backup JSON keeps it only while running
    r = owner.request("GET", f"/api/backups/{backup['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["backup"]["progress"] is None


def test_a_small_archive_shows_its_progress_too(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    """Under the multipart threshold the server opens the log only when the archive is complete;
    the progress gathered until then reaches it before the upload (so while the backup runs)."""
    src = source_tree(tmp_path / "src")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, [cfg] = setup(server, {"name": "Small", "sources": [{"path": str(src)}]})
    agent = Agent(tmp_path, server.url, key)
    live = LiveEvents(owner, server)
    try:
        done = agent.run("run", "--json")
        assert done.returncode == 0, done.stderr
        [finished] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
        deadline = time.monotonic() + 10
        while not live.progress_of(finished["logId"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        live.close()
    [backup] = owner.backups()
    assert backup["id"] == finished["logId"] and backup["size"] < 16 * MIB  # one PUT
    progress = live.progress_of(backup["id"])
    assert progress, f"no progress event; the stream had {live.events}"
    first = progress[0]
    assert first["configId"] == cfg["id"] and first["phase"] == "uploading"
    assert first["filesDone"] == first["filesTotal"] == 2
    assert first["bytesDone"] == first["bytesTotal"] == 6000 + 256 * 64
