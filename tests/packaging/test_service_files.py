"""The shipped service definitions are valid for the tools that read them: the systemd units pass
``systemd-analyze verify`` (and nothing in them is unknown to systemd), and the desktop entry passes
``desktop-file-validate`` when installed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

LINUX = Path(__file__).resolve().parents[2] / "packaging" / "linux"

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _fake_program(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(stat.S_IRWXU)


def _verify(unit: Path, *, user: bool, tmp_path: Path) -> str:
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info"}
    args = ["systemd-analyze"]
    if user:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env.update(XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path / "home"))
        args.append("--user")
    done = subprocess.run(
        [*args, "verify", "--man=no", str(unit)], capture_output=True, text=True, env=env
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    return output


@needs_systemd
def test_the_system_unit_for_servers_verifies(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "backapp-agent"
    _fake_program(program)
    text = (LINUX / "backapp-agent.service").read_text()
    # The program sits in the service's state directory, where it may swap in an update.
    assert "ExecStart=/var/lib/backapp-agent/bin/backapp-agent daemon" in text
    assert "StateDirectory=backapp-agent" in text
    unit = tmp_path / "backapp-agent.service"
    unit.write_text(text.replace("/var/lib/backapp-agent/bin/backapp-agent", str(program)))
    assert _verify(unit, user=False, tmp_path=tmp_path) == ""


@needs_systemd
@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("backapp-agent-user.service", ".local/bin/backapp-agent"),
        ("backapp-tray.service", ".local/opt/backapp-tray/backapp-tray"),
    ],
)
def test_the_user_units_verify(name: str, program: str, tmp_path: Path) -> None:
    _fake_program(tmp_path / "home" / program)
    assert _verify(LINUX / name, user=True, tmp_path=tmp_path) == ""


@needs_systemd
def test_the_check_catches_a_broken_unit(tmp_path: Path) -> None:
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nExecStrat=/bin/false\n")
    assert "Unknown key" in _verify(unit, user=False, tmp_path=tmp_path)


def test_the_desktop_entry_validates() -> None:
    if shutil.which("desktop-file-validate") is None:
        pytest.skip("desktop-file-validate is not installed")
    done = subprocess.run(
        ["desktop-file-validate", str(LINUX / "backapp-tray.desktop")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
