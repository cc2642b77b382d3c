"""``backapp-agent run`` is the one-shot mode (cron): its heartbeats say so, so the server expects
silence between runs. A run cancelled with Ctrl-C is ``cancelled`` (exit status 130), not failed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from desktop_agent import cli
from desktop_agent.engine import Event, ScanStarted
from tests.support.fakes import FakeBackApp, config


def test_run_says_it_is_oneshot_and_status_says_nothing(
    configured: FakeBackApp, tmp_path: Path
) -> None:
    configured.heartbeat_bodies.clear()
    assert cli.main(["run"]) == 0
    assert configured.heartbeat_bodies and all(
        b.get("mode") == "oneshot" for b in configured.heartbeat_bodies
    )
    configured.heartbeat_bodies.clear()
    cli.main(["status"])  # looking is not running: it leaves the recorded mode alone
    assert configured.heartbeat_bodies and all("mode" not in b for b in configured.heartbeat_bodies)


def test_ctrl_c_cancels_and_exits_130(
    configured: FakeBackApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    configured.configs = [config("c1", str(src))]
    configured.features = ["backup-cancelled"]

    from desktop_agent.cli import display

    real = display.make_display

    def interrupting(json_lines: bool) -> object:
        shown = real(json_lines)

        def sink(event: Event) -> None:
            if isinstance(event, ScanStarted):
                os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, handled by the CLI
            shown(event)

        return sink

    monkeypatch.setattr("desktop_agent.cli.run.make_display", interrupting)
    capsys.readouterr()
    assert cli.main(["run"]) == 130
    out = capsys.readouterr().out
    assert "CANCELLED Config c1: cancelled by the user" in out
    assert "FAILED" not in out
