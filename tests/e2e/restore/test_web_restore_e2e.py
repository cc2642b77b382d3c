"""Restore to a machine from the web console, end to end: a real ``backapp serve`` and S3 endpoint
(moto), a real ``backapp-agent daemon`` subprocess. The owner's ``POST /api/backups/{id}/restore``
reaches the daemon (over its WebSocket; with ``--no-socket``, at its heartbeat), the files land in
the chosen folder, and ``GET /api/restores/{id}`` reads ``completed`` with the counts. A second
restore over a locally edited file keeps both."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_process import Agent, Daemon, setup, source_tree
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory, Owner

pytestmark = [pytest.mark.e2e]


def _restore(owner: Owner, backup_id: str, agent_id: str, **body: Any) -> str:
    r = owner.request(
        "POST", f"/api/backups/{backup_id}/restore", json={"agentId": agent_id, **body}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _wait_done(owner: Owner, job_id: str, daemon: Daemon, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = owner.request("GET", f"/api/restores/{job_id}").json()["restore"]
        if job["status"] in ("completed", "failed", "expired"):
            return dict(job)
        assert daemon.process.poll() is None, daemon.output()
        assert time.monotonic() < deadline, f"still {job['status']}:\n{daemon.output()}"
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["incremental", "full"])
def test_a_web_restore_reaches_the_daemon_and_the_files_land(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
    kind: str,
) -> None:
    src = source_tree(tmp_path / "src")
    # heartbeats every 5 minutes: only the socket can bring the request in time
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_POLL_INTERVAL": "300"}
    )
    owner, agent_id, key, [cfg] = setup(
        server, {"name": "Docs", "sources": [{"path": str(src)}], "options": {"type": kind}}
    )
    agent = Agent(tmp_path, server.url, key)
    ran = agent.run("run")
    assert ran.returncode == 0, ran.stderr
    [backup] = owner.backups(configId=cfg["id"])
    assert backup["status"] == "completed" and backup["type"] == kind, backup

    target = tmp_path / "restored"
    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("agent socket connected")
        job_id = _restore(owner, backup["id"], agent_id, paths=[], target=str(target))
        job = _wait_done(owner, job_id, daemon, timeout=45)
        assert job["status"] == "completed", job
        assert job["files"] >= 2 and job["bytes"] >= 6000 + 256 * 64, job
        [a_txt] = list(target.rglob("a.txt"))
        [b_bin] = list(target.rglob("b.bin"))
        assert a_txt.read_text() == (src / "docs" / "a.txt").read_text()
        assert b_bin.read_bytes() == (src / "b.bin").read_bytes()
        assert "(heartbeat)" not in daemon.output()  # the socket brought it

        # the restored a.txt edited locally; a second restore of docs only keeps both copies
        a_txt.write_text("edited here\n")
        job_id = _restore(
            owner,
            backup["id"],
            agent_id,
            paths=[str(src / "docs")],
            target=str(target),
            conflict="keep-both",
        )
        job = _wait_done(owner, job_id, daemon)
        assert job["status"] == "completed" and job["renamed"] == 1, job
        assert a_txt.read_text() == "edited here\n"
        kept = [p for p in a_txt.parent.iterdir() if p.name.startswith("a (restored ")]
        assert len(kept) == 1 and kept[0].read_text() == (src / "docs" / "a.txt").read_text()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()


def test_without_the_socket_the_heartbeat_brings_it_and_a_bad_folder_fails_in_words(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = source_tree(tmp_path / "src")
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_POLL_INTERVAL": "1"}
    )
    owner, agent_id, key, [cfg] = setup(
        server, {"name": "Docs", "sources": [{"path": str(src)}], "options": {"type": "full"}}
    )
    agent = Agent(tmp_path, server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = owner.backups(configId=cfg["id"])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # asked while the machine is off: it stays pending
    job_id = _restore(owner, backup["id"], agent_id, target=str(blocker / "inside"))
    time.sleep(1)
    assert owner.request("GET", f"/api/restores/{job_id}").json()["restore"]["status"] == "pending"

    daemon = Daemon(agent, "--no-socket")
    try:
        job = _wait_done(owner, job_id, daemon)
    finally:
        daemon.stop()
    assert job["status"] == "failed", job
    assert str(blocker) in job["error"], job
    assert "(heartbeat)" in daemon.output()
