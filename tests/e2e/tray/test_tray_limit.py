"""The tray app backing up under a bandwidth limit set on the server: its status window says
"Upload limited to 4 Mbit/s" while the backup runs, shows a limit raised from the web console
mid-backup, and says nothing once the backup is over. Against a real ``backapp serve`` (local
storage) and the real engine, offscreen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from desktop_agent.engine import AgentSettings, KeyStore, agent_bandwidth, save_settings
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app
from tests.support.trees import MIB, random_file

pytestmark = pytest.mark.e2e

WAIT = 60_000


def test_the_status_window_shows_the_limit_of_a_running_backup(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    random_file(src / "big.bin", 4 * MIB, seed=7)  # 8.4 s at 4 Mbit/s
    server = live_server_factory.start(env={"BACKAPP_POLL_INTERVAL": "1"})
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    cfg = owner.create_config(agent_id, name="Photos", sources=[{"path": str(src)}])
    r = owner.request("PATCH", f"/api/agents/{agent_id}", json={"limits": {"upload": 4}})
    assert r.status_code == 200, r.text
    save_settings(AgentSettings(server_url=server.url, agent_id=agent_id, poll_interval_ms=1000))
    keystore.save(server.url.rstrip("/"), key)

    app, _fake, _rec = make_app(agent_dir, keystore)
    c = app.controller
    ended: list[Any] = []
    c.run_finished.connect(ended.append)
    try:
        app.start()
        qtbot.waitUntil(lambda: cfg["id"] in c.views and bool(c.online), timeout=WAIT)
        app.show_status()
        assert c.back_up([cfg["id"]])
        qtbot.waitUntil(lambda: cfg["id"] in app.status.panels, timeout=WAIT)
        panel = app.status.panels[cfg["id"]]
        qtbot.waitUntil(lambda: panel.limit.text() == "Upload limited to 4 Mbit/s", timeout=WAIT)
        assert not panel.limit.isHidden() and c.views[cfg["id"]].running

        # Raised on the server during the backup: the window says so at the next heartbeat.
        r = owner.request("PATCH", f"/api/agents/{agent_id}", json={"limits": {"upload": 400}})
        assert r.status_code == 200, r.text
        qtbot.waitUntil(lambda: panel.limit.text() == "Upload limited to 400 Mbit/s", timeout=WAIT)
        qtbot.waitUntil(lambda: bool(ended), timeout=WAIT)
        assert ended[0].ok, ended[0]
        app.status.refresh()
        assert panel.limit.isHidden()
        assert panel.state.text().startswith("OK ")
        [backup] = owner.backups()
        assert backup["status"] == "completed"
    finally:
        close_app(app)
        agent_bandwidth().set_server(None)  # the process's limits: leave none to other tests
