"""Restore to a machine from the web console, performed by the tray app (not only the daemon):
a real ``backapp serve`` with a real S3 endpoint (moto), backups made by the real
``backapp-agent``, the tray app offscreen with its real WebSocket. The owner's
``POST /api/backups/{id}/restore`` reaches the tray, the files land, a locally edited file is
kept beside the restored copy, the status window shows the restore while it runs, the page's
status reads ``completed`` with the counts, and a notification says so (a click on it opens the
status window)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.engine import AgentSettings, KeyStore, save_settings
from tests.support.agent_process import Agent, setup, source_tree
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory, Owner
from tests.support.tray import close_app, make_app, pair

pytestmark = pytest.mark.e2e

WAIT = 60_000


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop with a system tray (the offscreen platform has none)."""
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def _restore(owner: Owner, backup_id: str, agent_id: str, **body: Any) -> str:
    r = owner.request(
        "POST", f"/api/backups/{backup_id}/restore", json={"agentId": agent_id, **body}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _status(owner: Owner, job_id: str) -> dict[str, Any]:
    return dict(owner.request("GET", f"/api/restores/{job_id}").json()["restore"])


@pytest.mark.parametrize("kind", ["incremental", "full"])
def test_a_web_restore_reaches_the_tray_app_and_the_files_land(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    src = source_tree(tmp_path / "src")
    for i in range(30):  # enough files for the restore to be seen running
        (src / "many" / f"f{i:02d}.txt").parent.mkdir(exist_ok=True)
        (src / "many" / f"f{i:02d}.txt").write_text(f"file {i}\n" * 2000)
    # heartbeats every 5 minutes: the tray's socket brings the request
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_POLL_INTERVAL": "300"}
    )
    owner, agent_id, key, [cfg] = setup(
        server, {"name": "Docs", "sources": [{"path": str(src)}], "options": {"type": kind}}
    )
    cache = tmp_path / "agent-cache"
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(cache))
    ran = agent.run("run")
    assert ran.returncode == 0, ran.stderr
    [backup] = owner.backups(configId=cfg["id"])
    assert backup["status"] == "completed" and backup["type"] == kind, backup
    monkeypatch.setenv("BACKAPP_CACHE_DIR", str(cache))
    pair(server.url, key, keystore, agent_id)

    app, _fake, recorder = make_app(agent_dir, keystore)
    seen: list[str] = []
    app.controller.changed.connect(
        lambda: (
            seen.append(app.status.web_restore.text()) if app.status.web_restore.text() else None
        )
    )
    try:
        app.start()
        qtbot.waitUntil(lambda: app.controller.online is True, timeout=WAIT)
        socket = app.controller.runs.socket
        assert socket is not None
        qtbot.waitUntil(lambda: socket.connected, timeout=WAIT)

        target = tmp_path / "restored"
        job_id = _restore(owner, backup["id"], agent_id, paths=[], target=str(target))
        qtbot.waitUntil(lambda: _status(owner, job_id)["status"] != "pending", timeout=WAIT)
        qtbot.waitUntil(
            lambda: _status(owner, job_id)["status"] in ("completed", "failed"), timeout=WAIT
        )
        job = _status(owner, job_id)
        assert job["status"] == "completed", job
        assert job["files"] == 32 and job["renamed"] == 0, job
        [a_txt] = list(target.rglob("a.txt"))
        assert a_txt.read_text() == (src / "docs" / "a.txt").read_text()
        [b_bin] = list(target.rglob("b.bin"))
        assert b_bin.read_bytes() == (src / "b.bin").read_bytes()
        assert len(list(target.rglob("f*.txt"))) == 30
        # the status window showed it while it ran, then it went
        assert any(
            t.startswith(f"Restoring files asked for from the web console into {target}")
            for t in seen
        ), seen
        qtbot.waitUntil(lambda: app.controller.web_restores.current is None, timeout=WAIT)
        assert not app.status.web_restore.isVisibleTo(app.status)
        qtbot.waitUntil(lambda: bool(recorder.notifications), timeout=WAIT)
        title, message, error = recorder.notifications[-1]
        assert (title, error) == ("Web restore finished", False)
        assert message.startswith("Restored 32 files") and str(target) in message, message

        # The restored a.txt edited here; a second restore of docs only keeps both copies.
        a_txt.write_text("edited here\n")
        job_id = _restore(
            owner, backup["id"], agent_id, paths=[str(src / "docs")], target=str(target)
        )
        deadline = time.monotonic() + 60
        while _status(owner, job_id)["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, _status(owner, job_id)
            qtbot.wait(200)
        job = _status(owner, job_id)
        assert job["status"] == "completed" and job["renamed"] == 1, job
        assert a_txt.read_text() == "edited here\n"
        kept = [p for p in a_txt.parent.iterdir() if p.name.startswith("a (restored ")]
        assert len(kept) == 1 and kept[0].read_text() == (src / "docs" / "a.txt").read_text()
        qtbot.waitUntil(lambda: len(recorder.notifications) == 2, timeout=WAIT)
        assert "1 existing file(s) kept" in recorder.notifications[-1][1]

        # A click on the notification opens the status window, which shows the restores.
        app.status.hide()
        assert app.tray_icon is not None
        app.tray_icon.messageClicked.emit()
        assert app.status.isVisible()
    finally:
        close_app(app)


def test_a_web_restore_into_a_folder_that_cannot_be_written_fails_in_words(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the socket's help: the tray learns of it at its heartbeat (every second here)."""
    src = source_tree(tmp_path / "src")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, agent_id, key, [cfg] = setup(
        server, {"name": "Docs", "sources": [{"path": str(src)}], "options": {"type": "full"}}
    )
    agent = Agent(tmp_path, server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = owner.backups(configId=cfg["id"])
    pair(server.url, key, keystore, agent_id)
    save_settings(AgentSettings(server_url=server.url, agent_id=agent_id, poll_interval_ms=1000))
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder\n")

    app, _fake, recorder = make_app(agent_dir, keystore)
    monkeypatch.setattr(app.controller.runs, "start", lambda: None)  # no socket, no schedules
    try:
        app.start()
        job_id = _restore(owner, backup["id"], agent_id, target=str(blocker / "below"))
        qtbot.waitUntil(
            lambda: _status(owner, job_id)["status"] in ("completed", "failed"), timeout=WAIT
        )
        job = _status(owner, job_id)
        assert job["status"] == "failed" and str(blocker) in job["error"], job
        assert "Errno" not in job["error"], job  # the page shows it: words, no error numbers
        assert (tmp_path / "restored").exists() is False
        qtbot.waitUntil(lambda: bool(recorder.notifications), timeout=WAIT)
        title, message, error = recorder.notifications[-1]
        assert (title, error) == ("Web restore did not finish", True)
        assert "Errno" not in message and "Error:" not in message, message
        assert message.startswith(f"The restore into {blocker / 'below'} failed: "), message
        assert blocker.read_text() == "not a folder\n"
    finally:
        close_app(app)
