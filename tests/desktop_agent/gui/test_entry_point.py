"""``backapp-tray`` as a process: one instance per user and settings folder, and a clean exit on
SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from desktop_agent.gui.app import instance_name
from tests.support.paths import ROOT


def tray_command() -> list[str]:
    exe = shutil.which("backapp-tray")
    return (
        [exe]
        if exe
        else [
            sys.executable,
            "-c",
            "import sys; from desktop_agent.gui.app import main; sys.exit(main())",
        ]
    )


def test_a_second_launch_hands_over_to_the_first_and_sigterm_quits(tmp_path: Path) -> None:
    directory = tmp_path / "agent-config"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKAPP_", "AWS_"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        BACKAPP_AGENT_CONFIG_DIR=str(directory),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    version = subprocess.run(
        [*tray_command(), "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("backapp-tray ")

    socket_file = Path(tempfile.gettempdir()) / instance_name(directory)
    first = subprocess.Popen(
        tray_command(), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not socket_file.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first instance never listened"
            time.sleep(0.1)
        second = subprocess.run(
            tray_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
        _out, err = first.communicate()
    assert not socket_file.exists()
    assert "Traceback" not in err and "malformed" not in err, err


def test_without_qt_the_hint_names_a_command_that_works(tmp_path: Path) -> None:
    """BackApp is not published on PyPI: ``pip install 'backapp[tray]'`` would fail (or install
    someone else's package). The hint is the command that works, from a checkout."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['PySide6'] = None; "
            "from desktop_agent.tray import main; sys.exit(main())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs Qt (PySide6)" in done.stderr
    assert 'pip install -e ".[tray]"' in done.stderr
    assert "backapp[tray]" not in done.stderr
