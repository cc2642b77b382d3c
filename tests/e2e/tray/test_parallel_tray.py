"""The tray app with ``parallelBackups`` 2: two due schedules start together, the menu and the
status window show both (a Cancel per config beside Cancel All), and when the first one ends the
other's progress is still shown. Against a real ``backapp serve`` (local storage) and the real
engine, offscreen."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.engine import AgentSettings, KeyStore, save_settings
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app
from tests.support.trees import MIB, random_file

WAIT = 120_000


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def test_two_due_schedules_run_together_and_the_tray_shows_each(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    cfgs = []
    for n, name in enumerate(("Photos", "Music")):
        src = tmp_path / name
        random_file(src / "big.bin", 6 * MIB, seed=n)
        cfgs.append(
            owner.create_config(
                agent_id,
                name=name,
                sources=[{"path": str(src)}],
                options={"schedule": {"cron": "* * * * *"}},
            )
        )
    save_settings(AgentSettings(server_url=server.url, agent_id=agent_id, parallel_backups=2))
    keystore.save(server.url.rstrip("/"), key)
    since = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    agent_dir.mkdir(parents=True, exist_ok=True)
    (agent_dir / "schedule.json").write_text(
        json.dumps({"configs": {c["id"]: {"cron": "* * * * *", "since": since} for c in cfgs}})
    )
    ids = [c["id"] for c in cfgs]

    app, _fake, _rec = make_app(agent_dir, keystore)
    c = app.controller
    ended: list[object] = []
    c.run_finished.connect(ended.append)
    try:
        c.pause(timedelta(hours=1))  # nothing starts before both configs are known
        app.start()
        qtbot.waitUntil(lambda: all(i in c.views for i in ids) and c.online, timeout=WAIT)
        c.resume()  # both held slots are due: both start at once
        assert sorted(c.runs.running_jobs) == sorted(ids)
        assert {v.id for v in c.running_views()} == set(ids)
        app.menu.refresh()
        assert app.menu.actions["header"].text() == "Backing up 2 configurations…"
        assert app.menu.actions["cancel"].text() == "Cancel All Backups"
        assert {f"cancel:{i}" for i in ids} <= set(app.menu.actions)
        assert app.menu.actions[f"cancel:{ids[0]}"].text() == "Cancel 'Photos'"
        app.status.refresh()
        headline = app.status.headline.text()
        assert headline.startswith("Backing up ") and "Music" in headline and "Photos" in headline

        qtbot.waitUntil(lambda: len(ended) >= 1, timeout=WAIT)
        if len(ended) == 1:  # the other one's progress (or result) is still shown, not "idle"
            [still] = c.runs.running_jobs
            assert c.views[still].phase in ("waiting", "scanning", "archiving", "completed")
        qtbot.waitUntil(lambda: len(ended) == 2, timeout=WAIT)
        assert all(r.ok for r in ended), ended  # type: ignore[attr-defined]
        assert not c.running
        backups = owner.backups()
        assert sorted(b["configId"] for b in backups) == sorted(ids)
        assert all(b["status"] == "completed" and b["trigger"] == "schedule" for b in backups)
        assert all(c.views[i].phase == "completed" for i in ids)
    finally:
        close_app(app)
