"""Parallel backups in the tray share one token bucket per direction, so ``limitUpload`` holds for
all of them together (each job used to build its own storage client with its own bucket)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from desktop_agent.engine import AgentSettings, CancelToken, KeyStore, StateStore
from desktop_agent.gui._workers import RunContext
from tests.support.tray import close_app, make_app, pair

SERVER = "http://127.0.0.1:9"  # nothing listens: these tests never start polling
KEY = "bka_" + "p" * 43


def test_parallel_runs_share_the_bandwidth_limits(
    qtbot: Any, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        runs = app.controller.runs
        settings = AgentSettings(server_url=SERVER, limit_upload=8.0, parallel_backups=2)
        limits = runs._shared_limits(settings)
        assert limits[0] is not None and limits[0].mbps == 8.0 and limits[1] is None
        assert runs._shared_limits(settings) is limits  # the same buckets for the next run
        state = StateStore(agent_dir)
        clients = [
            RunContext(settings, KEY, state, CancelToken(), limits=limits).storage()
            for _ in range(2)
        ]
        try:
            assert clients[0].upload_limit is clients[1].upload_limit is limits[0]
        finally:
            for client in clients:
                client.close()
        changed = runs._shared_limits(replace(settings, limit_upload=4.0))
        assert changed[0] is not None and changed[0].mbps == 4.0
    finally:
        close_app(app)


def test_the_web_consoles_parallel_backups_replace_the_machines_own_in_the_tray(
    qtbot: Any, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        runs = app.controller.runs
        local = app.controller.settings.parallel_backups
        assert runs.parallel == local == 1
        runs.heard(3)  # a heartbeat's parallelBackups from the agent page
        assert runs.parallel == 3
        runs.heard(9)  # not one this agent can use: the machine's own holds
        assert runs.parallel == local
        runs.heard(2)
        runs.heard(None)  # cleared on the page
        assert runs.parallel == local
    finally:
        close_app(app)
