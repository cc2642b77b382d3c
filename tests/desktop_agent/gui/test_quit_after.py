"""``BACKAPP_TRAY_QUIT_AFTER_MS``: the smoke test of a build (start, say so, quit with status 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_agent import __version__
from desktop_agent.gui import app as gui_app


def test_a_bad_value_is_refused_before_qt_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKAPP_TRAY_QUIT_AFTER_MS", "soon")
    assert gui_app.main(["backapp-tray"]) == 2
    assert "BACKAPP_TRAY_QUIT_AFTER_MS must be a number of milliseconds, not 'soon'" in (
        capsys.readouterr().err
    )


def test_the_app_starts_says_so_and_quits_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKAPP_", "AWS_"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        BACKAPP_AGENT_CONFIG_DIR=str(tmp_path / "agent-config"),
        BACKAPP_TRAY_QUIT_AFTER_MS="300",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from desktop_agent.tray import main; sys.exit(main())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"backapp-tray {__version__} started (Qt platform offscreen, no system tray); "
        "quitting in 300 ms" in done.stderr
    )
