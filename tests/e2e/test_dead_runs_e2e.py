"""End to end: runs that die leave no ghosts, and storage that blips or hangs costs a pause, not the
backup. A real ``backapp serve``, the real ``backapp-agent`` (``run`` and ``daemon``) as processes,
and moto's S3 behind a fault-injecting proxy on loopback (the server's S3 endpoint, so every
pre-signed URL goes through it): a slow uplink keeps a multipart upload going long enough to kill
what runs it; the proxy also black-holes or refuses storage on demand.

- ``kill -9`` of ``backapp-agent run`` mid-upload: the backup becomes ``interrupted`` once its
  lease lapses (a 30 s lease here), its multipart upload is aborted in S3, and a re-run is not
  refused;
- the same agent restarted at once takes the dead run over (no waiting for a 5 minute lease);
- a daemon killed mid-upload and started again delivers the Back Up Now that came meanwhile;
- the server crashes mid-upload, long enough for the agent's run to fail: once it is back, the
  ghost is gone and Back Up Now is delivered, not swallowed;
- storage black-holed for a while and then down for 15 s: the upload waits (the server shows
  "waiting for storage" instead of a rate), then completes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.desktop_agent.test_daemon_e2e import Daemon
from tests.desktop_agent.test_e2e_agent import MIB, Agent, random_file, setup
from tests.support.faults import FaultProxy
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory, Owner

pytestmark = [pytest.mark.e2e]

SLOW = 4 * MIB
"""Bytes per second the proxy lets through towards S3: a 30 MiB archive takes about 8 s."""


@pytest.fixture
def proxy(s3_server: S3Endpoint) -> Iterator[FaultProxy]:
    host, port = s3_server.endpoint_url.removeprefix("http://").rsplit(":", 1)
    faulty = FaultProxy(host, int(port))
    yield faulty
    faulty.close()


def start(
    factory: LiveServerFactory,
    s3: S3Endpoint,
    bucket: str,
    proxy: FaultProxy,
    **kw: Any,
) -> LiveServer:
    """The server, its S3 endpoint through the proxy; housekeeping every second."""
    through = S3Endpoint(endpoint_url=proxy.url)
    env = {"BACKAPP_TASK_INTERVAL": "1", "BACKAPP_POLL_INTERVAL": "2", **kw.pop("env", {})}
    return factory.start(s3=through, bucket=bucket, env=env, **kw)


def big_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    random_file(src / "data.bin", 30 * MIB)  # does not compress: six 5 MiB parts
    return src


def agent_for(tmp_path: Path, server: LiveServer, key: str, **env: str) -> Agent:
    return Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
        BACKAPP_AGENT_UPLOAD_CONCURRENCY="1",
        **env,
    )


def run_until_parts_go_up(agent: Agent) -> subprocess.Popen[str]:
    """``backapp-agent run --json``, returned once a part has landed in S3."""
    proc = agent.popen("run", "--json")
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if json.loads(line)["event"] == "upload_progress":
            return proc
    raise AssertionError("the upload never got going:\n" + "".join(lines))


def uploads(s3: S3Endpoint, bucket: str) -> list[dict[str, Any]]:
    return list(s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def only(owner: Owner, **match: Any) -> dict[str, Any] | None:
    found = [b for b in owner.backups() if all(b.get(k) == v for k, v in match.items())]
    return found[0] if len(found) == 1 else None


def test_a_killed_run_becomes_interrupted_when_its_lease_lapses_and_its_upload_is_aborted(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    src = big_tree(tmp_path)
    server = start(live_server_factory, s3_server, s3_bucket, proxy)
    owner, _agent_id, key, _ = setup(server, {"name": "Big", "sources": [{"path": str(src)}]})
    agent = agent_for(tmp_path, server, key, BACKAPP_AGENT_LEASE_TTL="30")
    proxy.rate = SLOW
    proc = run_until_parts_go_up(agent)
    proc.kill()  # SIGKILL: no abort, no complete, no lease release
    killed = time.monotonic()
    proc.wait(10)
    [ghost] = owner.backups()
    assert ghost["status"] == "running"
    assert len(uploads(s3_server, s3_bucket)) == 1

    backup = wait_for(
        "the interrupted status",
        lambda: only(owner, id=ghost["id"], status="interrupted"),
        timeout=60,
    )
    took = time.monotonic() - killed
    assert took < 30 + 10, took  # the lease's TTL (renewed every 10 s) and a housekeeping round
    assert backup["error"].startswith("The agent stopped before the backup finished")
    assert backup["completedAt"] and backup["progress"] is None
    wait_for("the abort", lambda: uploads(s3_server, s3_bucket) == [], timeout=10)

    proxy.rate = None
    again = agent.run("run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" not in again.stderr
    assert {b["status"] for b in owner.backups()} == {"interrupted", "completed"}
    assert uploads(s3_server, s3_bucket) == []


def test_an_agent_started_again_at_once_takes_its_dead_run_over(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    src = big_tree(tmp_path)
    server = start(live_server_factory, s3_server, s3_bucket, proxy)
    owner, _agent_id, key, [cfg] = setup(server, {"name": "Big", "sources": [{"path": str(src)}]})
    agent = agent_for(tmp_path, server, key)  # the default 5 minute lease
    proxy.rate = SLOW
    proc = run_until_parts_go_up(agent)
    proc.kill()
    proc.wait(10)
    [ghost] = owner.backups()

    proxy.rate = None
    t0 = time.monotonic()
    again = agent.run("run", "--config", cfg["id"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - t0 < 120  # not after the dead process's lease lapsed
    assert "already running" not in again.stderr
    old = only(owner, id=ghost["id"])
    assert old is not None and old["status"] == "interrupted"
    assert old["error"].startswith("The agent was restarted before the backup finished")
    new = only(owner, status="completed")
    assert new is not None and new["id"] != ghost["id"]
    assert uploads(s3_server, s3_bucket) == []  # the dead run's parts are gone too


def test_a_daemon_killed_mid_upload_delivers_back_up_now_once_started_again(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    src = big_tree(tmp_path)
    server = start(live_server_factory, s3_server, s3_bucket, proxy)
    owner, _agent_id, key, [cfg] = setup(server, {"name": "Big", "sources": [{"path": str(src)}]})
    agent = agent_for(tmp_path, server, key)
    proxy.rate = SLOW
    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("agent socket connected")
        r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
        assert r.status_code == 202, r.text
        daemon.wait_for_line('"event": "upload_progress"', timeout=60)
    finally:
        daemon.process.kill()
        daemon.process.wait(10)
    [ghost] = owner.backups()
    assert ghost["status"] == "running"
    # Asked again while no agent runs: pending (the first request was answered by the ghost).
    r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
    assert r.status_code == 202, r.text

    proxy.rate = None
    daemon = Daemon(agent)
    try:
        done = wait_for(
            "the requested backup",
            lambda: only(owner, status="completed", trigger="request"),
            timeout=90,
        )
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    old = only(owner, id=ghost["id"])
    assert old is not None and old["status"] == "interrupted"
    assert done["id"] != ghost["id"]
    # answered, so not pending: the next click is taken, not refused as "already pending"
    r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
    assert r.status_code == 202, r.text
    assert uploads(s3_server, s3_bucket) == []


def test_a_server_crash_mid_upload_leaves_no_ghost_and_back_up_now_is_delivered(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    src = big_tree(tmp_path)
    server = start(live_server_factory, s3_server, s3_bucket, proxy)
    owner, _agent_id, key, [cfg] = setup(server, {"name": "Big", "sources": [{"path": str(src)}]})
    # The agent gives a part up after 3 s of failures: the server stays down longer than that.
    agent = agent_for(tmp_path, server, key, BACKAPP_AGENT_STORAGE_RETRY_BUDGET="3")
    port = int(server.url.rsplit(":", 1)[1])
    proxy.rate = SLOW
    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("agent socket connected")
        r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
        assert r.status_code == 202, r.text
        daemon.wait_for_line('"event": "upload_progress"', timeout=60)
        [ghost] = owner.backups()
        server.process.send_signal(signal.SIGKILL)  # a crash: nothing is finished or released
        server.process.wait(10)
        # the run fails; the agent can tell nobody (the server is down)
        daemon.wait_for_line('"event": "backup_failed"', timeout=120)
        proxy.rate = None
        restarted = start(
            live_server_factory,
            s3_server,
            s3_bucket,
            proxy,
            port=port,
            data_dir=server.data_dir,
        )
        owner = restarted.owner(signup=False)
        # Right away, before any lease could lapse: the click is delivered and runs.
        r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
        assert r.status_code == 202, r.text
        done = wait_for(
            "the requested backup after the restart",
            lambda: only(owner, status="completed"),
            timeout=90,
        )
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    old = only(owner, id=ghost["id"])
    assert old is not None and old["status"] == "interrupted", old
    assert done["trigger"] == "request"
    assert uploads(s3_server, s3_bucket) == []


def test_storage_black_holed_then_down_for_15_s_costs_a_pause_not_the_backup(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    src = big_tree(tmp_path)
    server = start(live_server_factory, s3_server, s3_bucket, proxy)
    owner, _agent_id, key, _ = setup(server, {"name": "Big", "sources": [{"path": str(src)}]})
    # Stalls are noticed after 2 s here (60 s by default); the retry budget is the default.
    agent = agent_for(tmp_path, server, key, BACKAPP_AGENT_STORAGE_STALL_TIMEOUT="2")
    proxy.rate = SLOW
    proc = run_until_parts_go_up(agent)
    try:
        proxy.set("blackhole")  # takes the bytes, never answers
        [running] = owner.backups()
        waiting = wait_for(
            "'waiting for storage' on the server",
            lambda: (
                owner.request("GET", f"/api/backups/{running['id']}").json()["backup"]["progress"]
                or {}
            ).get("waiting"),
            timeout=30,
        )
        assert waiting.startswith("waiting for storage: ") and "stalled" in waiting
        proxy.set("refuse")  # now down altogether, for 15 s
        time.sleep(15)
        proxy.rate = None
        proxy.set("pass")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    assert "upload_waiting" in kinds and "upload_resumed" in kinds
    resumed = next(e for e in events if e["event"] == "upload_resumed")
    assert resumed["waited"] > 15
    [backup] = owner.backups()
    assert backup["status"] == "completed" and backup["size"] > 30 * MIB
    assert backup["progress"] is None
    assert uploads(s3_server, s3_bucket) == []
