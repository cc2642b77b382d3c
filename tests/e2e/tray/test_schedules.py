"""The tray app runs the engine's scheduler: a due schedule starts a backup by itself, Pause holds it
(while Back Up Now from the web still goes through, over the agent's WebSocket), Resume releases it.
Against a real ``backapp serve`` (local storage) and the real engine, offscreen."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.engine import KeyStore
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app, pair

WAIT = 60_000


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def test_pause_holds_a_due_schedule_back_up_now_still_runs_and_resume_releases_it(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("hello\n" * 1000)
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    cfg = owner.create_config(
        agent_id,
        name="Minutely",
        sources=[{"path": str(src)}],
        options={"schedule": {"cron": "* * * * *"}},
    )
    pair(server.url, key, keystore, agent_id)
    # the schedule has been known for two minutes: a slot is due at once
    since = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    agent_dir.mkdir(parents=True, exist_ok=True)
    (agent_dir / "schedule.json").write_text(
        json.dumps({"configs": {cfg["id"]: {"cron": "* * * * *", "since": since}}})
    )

    app, _fake, _rec = make_app(agent_dir, keystore)
    c = app.controller
    try:
        c.pause(timedelta(hours=1))
        app.start()
        qtbot.waitUntil(lambda: cfg["id"] in c.views and c.online is True, timeout=WAIT)
        qtbot.waitUntil(lambda: c.runs.socket is not None and c.runs.socket.connected, timeout=WAIT)
        c.check_schedules()
        assert not c.running  # held by the pause
        assert owner.backups() == []

        # Back Up Now from the web goes through while paused, over the socket
        r = owner.request("POST", f"/api/configs/{cfg['id']}/run")
        assert r.status_code == 202, r.text
        with qtbot.waitSignal(c.run_finished, timeout=WAIT) as finished:
            pass
        assert finished.args[0].ok, finished.args[0]
        [requested] = owner.backups()
        assert requested["trigger"] == "request" and requested["status"] == "completed"
        c.check_schedules()
        assert not c.running and len(owner.backups()) == 1  # the schedule is still held

        with qtbot.waitSignal(c.run_finished, timeout=WAIT) as finished:
            c.resume()  # the held slot runs at once
        assert finished.args[0].ok, finished.args[0]
        triggers = sorted(b["trigger"] for b in owner.backups())
        assert triggers == ["request", "schedule"]
        assert c.views[cfg["id"]].phase == "completed"
    finally:
        close_app(app)


def test_back_up_now_from_the_menu_skips_a_config_running_elsewhere_and_says_so(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
) -> None:
    """The tray's own Back Up Now takes each config's lease like every other run: while another
    process or machine holds it, the config is not backed up and a notification says why."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("hello\n" * 1000)
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    cfg = owner.create_config(agent_id, name="Shared", sources=[{"path": str(src)}])
    pair(server.url, key, keystore, agent_id)
    other = server.agent_client(key)  # e.g. `backapp-agent run` of this agent, already running
    held = other.post("/api/agent/lease", json={"configId": cfg["id"], "ttlSeconds": 120})
    assert held.status_code == 200, held.text

    app, _fake, rec = make_app(agent_dir, keystore)
    c = app.controller
    try:
        app.start()
        qtbot.waitUntil(lambda: cfg["id"] in c.views and c.online is True, timeout=WAIT)
        with qtbot.waitSignal(c.run_finished, timeout=WAIT) as finished:
            app.menu.actions[f"backup:{cfg['id']}"].trigger()
        result = finished.args[0]
        assert not result.ok and result.results == ()
        [skip] = result.skipped
        assert skip.config_id == cfg["id"]
        assert owner.backups() == []  # never run twice at once
        [(title, message, is_error)] = rec.notifications
        assert title == "Backup not started" and not is_error
        assert message.startswith("'Shared': config is already running on agent laptop until ")
        assert "not started, already running elsewhere" in "\n".join(c.log_lines)
        assert c.views[cfg["id"]].phase == "idle" and c.views[cfg["id"]].last is None

        released = other.post(
            "/api/agent/lease/release",
            json={"configId": cfg["id"], "token": held.json()["lease"]["token"]},
        )
        assert released.status_code == 200, released.text
        with qtbot.waitSignal(c.run_finished, timeout=WAIT) as finished:
            assert c.back_up([cfg["id"]])
        assert finished.args[0].ok, finished.args[0]
        [backup] = owner.backups()
        assert backup["status"] == "completed" and backup["trigger"] == "manual"
    finally:
        close_app(app)
