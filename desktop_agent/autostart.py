"""Start the tray app at login: enable, disable and query it, per platform. No Qt here.

* macOS: a launchd agent, ``~/Library/LaunchAgents/org.backapp.tray.plist`` (``RunAtLoad``), which
  launchd reads at each login.
* Linux: an XDG autostart entry, ``$XDG_CONFIG_HOME/autostart/backapp-tray.desktop``, which every
  desktop environment (GNOME, KDE, Xfce, …) starts with the graphical session, after the tray exists.
  (``packaging/linux/backapp-tray.service`` is the systemd user unit alternative for those who prefer
  it; the app itself uses the desktop entry.)
* Windows: the value ``BackApp`` under ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``.

Everything this module touches is injectable (home folder, environment, the registry), so the tests
run each platform's variant on any system.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

__all__ = [
    "LAUNCHD_LABEL",
    "RUN_KEY",
    "RUN_VALUE",
    "Autostart",
    "AutostartError",
    "Registry",
    "WindowsRegistry",
    "tray_command",
]

LAUNCHD_LABEL = "org.backapp.tray"
DESKTOP_FILE = "backapp-tray.desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "BackApp"


class AutostartError(Exception):
    """Start at login could not be changed (the message says why)."""


class Registry(Protocol):
    """The few registry operations needed on ``HKEY_CURRENT_USER\\<RUN_KEY>``."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...


class WindowsRegistry:
    """``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run`` through ``winreg``."""

    def __init__(self, key: str = RUN_KEY) -> None:
        self.key = key

    def get(self, name: str) -> str | None:
        if sys.platform != "win32":
            raise AutostartError("the Windows registry exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, self.key) as handle:
                value, _kind = winreg.QueryValueEx(handle, name)
        except FileNotFoundError:
            return None
        return str(value)

    def set(self, name: str, value: str) -> None:
        if sys.platform != "win32":
            raise AutostartError("the Windows registry exists only on Windows")
        import winreg

        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, self.key) as handle:
            winreg.SetValueEx(handle, name, 0, winreg.REG_SZ, value)

    def delete(self, name: str) -> None:
        if sys.platform != "win32":
            raise AutostartError("the Windows registry exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, self.key, 0, winreg.KEY_SET_VALUE) as h:
                winreg.DeleteValue(h, name)
        except FileNotFoundError:
            pass


def tray_command(
    executable: str | None = None, frozen: bool | None = None, platform: str | None = None
) -> list[str]:
    """How to start this tray app again: the frozen program itself (``BackApp.app``'s executable,
    ``backapp-tray.exe``…), else the ``backapp-tray`` script next to this Python, else
    ``python -m desktop_agent.tray``."""
    executable = executable or sys.executable
    frozen = getattr(sys, "frozen", False) if frozen is None else frozen
    platform = platform or sys.platform
    if frozen:
        return [executable]
    script = Path(executable).parent / (
        "backapp-tray.exe" if platform == "win32" else "backapp-tray"
    )
    if script.is_file():
        return [str(script)]
    found = shutil.which("backapp-tray")
    if found:
        return [found]
    return [executable, "-m", "desktop_agent.tray"]


def _windows_command_line(command: Sequence[str]) -> str:
    return subprocess.list2cmdline(list(command))


def _desktop_exec(command: Sequence[str]) -> str:
    """``Exec=`` of a desktop entry: arguments quoted per the Desktop Entry spec (double quotes;
    ``"``, `````, ``$`` and ``\\`` escaped; ``%`` doubled)."""
    reserved = set(" \t\n\"'\\><~|&;$*?#()`")
    parts = []
    for arg in command:
        arg = arg.replace("%", "%%")
        if arg and not any(c in reserved for c in arg):
            parts.append(arg)
        else:
            escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
            parts.append(f'"{escaped}"')
    return " ".join(parts)


class Autostart:
    """Start at login for the tray app on ``platform`` (``sys.platform`` by default)."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        platform: str | None = None,
        home: Path | None = None,
        env: Mapping[str, str] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.platform = platform or sys.platform
        self.command = list(command) if command else tray_command(platform=self.platform)
        self.env = os.environ if env is None else env
        self.home = home or Path.home()
        self._registry = registry

    # -- where --------------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        if self.platform == "darwin":
            return "launchd"
        if self.platform == "win32":
            return "registry"
        return "xdg"

    @property
    def path(self) -> Path | None:
        """The file that makes it start (``None`` on Windows: a registry value)."""
        if self.kind == "launchd":
            return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        if self.kind == "xdg":
            config = self.env.get("XDG_CONFIG_HOME") or str(self.home / ".config")
            return Path(config) / "autostart" / DESKTOP_FILE
        return None

    def describe(self) -> str:
        if self.kind == "registry":
            return f"HKEY_CURRENT_USER\\{RUN_KEY} ({RUN_VALUE})"
        return str(self.path)

    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = WindowsRegistry()
        return self._registry

    # -- what ---------------------------------------------------------------------------------------

    def launchd_plist(self) -> bytes:
        data = {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": self.command,
            "RunAtLoad": True,
            "KeepAlive": False,
            "ProcessType": "Interactive",
            "LimitLoadToSessionType": "Aqua",
        }
        return plistlib.dumps(data)

    def desktop_entry(self) -> str:
        return "\n".join(
            [
                "[Desktop Entry]",
                "Type=Application",
                "Name=BackApp",
                "Comment=Back up this computer with BackApp",
                f"Exec={_desktop_exec(self.command)}",
                "Icon=backapp",
                "Terminal=false",
                "Categories=Utility;Archiving;",
                "X-GNOME-Autostart-enabled=true",
                "X-GNOME-Autostart-Delay=5",
                "",
            ]
        )

    # -- intents ------------------------------------------------------------------------------------

    def is_enabled(self) -> bool:
        """Whether the tray app starts at login (``False`` when that cannot be read)."""
        try:
            if self.kind == "registry":
                return self.registry().get(RUN_VALUE) is not None
            path = self.path
            assert path is not None
            if not path.is_file():
                return False
            if self.kind == "xdg":
                # A desktop entry can be present yet switched off (GNOME's Startup Applications).
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                off = {"Hidden=true", "X-GNOME-Autostart-enabled=false"}
                return not any(line.strip() in off for line in lines)
            return True
        except OSError:
            return False

    def enable(self) -> None:
        """Start the tray app at each login (from now on; it does not start a second copy now)."""
        try:
            if self.kind == "registry":
                self.registry().set(RUN_VALUE, _windows_command_line(self.command))
                return
            path = self.path
            assert path is not None
            content = (
                self.launchd_plist()
                if self.kind == "launchd"
                else self.desktop_entry().encode("utf-8")
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, path)
        except OSError as exc:
            raise AutostartError(
                f"cannot turn on start at login ({self.describe()}): {exc}"
            ) from exc

    def disable(self) -> None:
        try:
            if self.kind == "registry":
                self.registry().delete(RUN_VALUE)
                return
            path = self.path
            assert path is not None
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise AutostartError(
                f"cannot turn off start at login ({self.describe()}): {exc}"
            ) from exc

    def set_enabled(self, enabled: bool) -> None:
        self.enable() if enabled else self.disable()

    def __repr__(self) -> str:
        return f"Autostart({self.kind}: {self.describe()}, command={shlex.join(self.command)})"
