"""Start at login, per platform (``desktop_agent.autostart``): each variant writes what its platform
reads at login, reads it back, and removes it. The macOS and Windows variants run here with their
file/registry injected; the Linux variant also passes the freedesktop checks when
``desktop-file-validate`` is installed."""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_agent.autostart import (
    LAUNCHD_LABEL,
    RUN_VALUE,
    Autostart,
    AutostartError,
    tray_command,
)

APP = "/Applications/BackApp.app/Contents/MacOS/BackApp"


class FakeRegistry:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.values.pop(name, None)


def test_macos_writes_a_launchd_agent_that_runs_at_load(tmp_path: Path) -> None:
    auto = Autostart([APP], platform="darwin", home=tmp_path)
    plist = tmp_path / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert auto.path == plist and not auto.is_enabled()
    auto.enable()
    data = plistlib.loads(plist.read_bytes())
    assert data["Label"] == LAUNCHD_LABEL and data["ProgramArguments"] == [APP]
    assert data["RunAtLoad"] is True and data["LimitLoadToSessionType"] == "Aqua"
    assert auto.is_enabled()
    auto.disable()
    assert not plist.exists() and not auto.is_enabled()
    auto.disable()  # idempotent


def test_the_shipped_launchd_plists_parse_and_match_what_the_app_writes() -> None:
    root = Path(__file__).resolve().parents[2] / "packaging" / "macos"
    tray = plistlib.loads((root / "org.backapp.tray.plist").read_bytes())
    written = plistlib.loads(Autostart([APP], platform="darwin").launchd_plist())
    assert tray == written
    agent = plistlib.loads((root / "org.backapp.agent.plist").read_bytes())
    assert agent["ProgramArguments"][-1] == "daemon" and agent["RunAtLoad"] is True


def test_windows_uses_the_run_key_with_a_quoted_command() -> None:
    registry = FakeRegistry()
    exe = r"C:\Users\Ann Lee\AppData\Local\Programs\BackApp\backapp-tray.exe"
    auto = Autostart([exe], platform="win32", registry=registry)
    assert auto.path is None and "CurrentVersion\\Run" in auto.describe()
    assert not auto.is_enabled()
    auto.enable()
    assert registry.values == {RUN_VALUE: f'"{exe}"'}
    assert auto.is_enabled()
    auto.disable()
    assert registry.values == {} and not auto.is_enabled()


def test_linux_writes_an_xdg_autostart_entry(tmp_path: Path) -> None:
    command = [str(tmp_path / "My Apps" / "backapp-tray"), "--flag=100%"]
    auto = Autostart(command, platform="linux", home=tmp_path, env={})
    entry = tmp_path / ".config" / "autostart" / "backapp-tray.desktop"
    assert auto.path == entry and not auto.is_enabled()
    auto.enable()
    text = entry.read_text()
    [exec_line] = [line for line in text.splitlines() if line.startswith("Exec=")]
    assert exec_line == f'Exec="{command[0]}" --flag=100%%'
    # The spec's quoting is the shell's for these characters, once %% is undone.
    assert shlex.split(exec_line[5:].replace("%%", "%")) == command
    assert auto.is_enabled()
    if shutil.which("desktop-file-validate"):
        done = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    # Switched off by the desktop's own settings: present but not enabled.
    entry.write_text(
        text.replace("X-GNOME-Autostart-enabled=true", "X-GNOME-Autostart-enabled=false")
    )
    assert not auto.is_enabled()
    auto.disable()
    assert not entry.exists()


def test_linux_honours_xdg_config_home(tmp_path: Path) -> None:
    auto = Autostart(
        ["backapp-tray"],
        platform="linux",
        home=tmp_path / "home",
        env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")},
    )
    auto.enable()
    assert (tmp_path / "cfg" / "autostart" / "backapp-tray.desktop").is_file()


def test_a_failure_names_the_place(tmp_path: Path) -> None:
    (tmp_path / ".config").write_text("not a folder")
    auto = Autostart(["backapp-tray"], platform="linux", home=tmp_path, env={})
    with pytest.raises(AutostartError, match="cannot turn on start at login .*autostart"):
        auto.enable()
    assert not auto.is_enabled()


def test_the_command_is_the_frozen_program_or_the_installed_script(tmp_path: Path) -> None:
    assert tray_command(APP, frozen=True, platform="darwin") == [APP]
    script = tmp_path / "backapp-tray"
    script.write_text("#!/bin/sh\n")
    assert tray_command(str(tmp_path / "python3"), frozen=False, platform="linux") == [str(script)]
    # In this test run (not frozen) it finds the console script or falls back to the module.
    command = tray_command()
    assert command[0].endswith("backapp-tray") or command[1:] == ["-m", "desktop_agent.tray"]
    if command[1:] == ["-m", "desktop_agent.tray"]:
        assert command[0] == sys.executable
