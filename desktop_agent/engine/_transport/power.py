"""Is this machine on a metered connection, or on battery? The seam the bandwidth control asks.

Each answer is ``True``, ``False`` or ``None`` (the OS does not say, or this build cannot ask):
``None`` never pauses anything. What each platform can tell:

- Linux: metered from NetworkManager's ``Metered`` property over D-Bus (``busctl``, else
  ``dbus-send``; ``nmcli`` has no global view of it), so ``None`` without NetworkManager (systemd-
  networkd, ifupdown); battery from ``/sys/class/power_supply`` (a mains or USB supply online, or
  a battery not discharging, means not on battery).
- macOS: battery from ``pmset -g batt`` ("drawing from 'Battery Power'"). Metered ("Low Data
  Mode", ``NWPath.isExpensive``) is only reachable from the Network framework, which this build
  does not link: ``None``.
- Windows: battery from ``GetSystemPowerStatus`` (``ACLineStatus``). Metered needs WinRT's
  ``NetworkInformation.GetInternetConnectionProfile().GetConnectionCost()``, not reachable from
  the standard library: ``None``.

The macOS and Windows probes cannot be run on the Linux machines the tests run on; their parsing is
unit-tested with recorded outputs.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

__all__ = [
    "LinuxProbe",
    "MacProbe",
    "NoProbe",
    "PowerProbe",
    "WindowsProbe",
    "nm_metered",
    "pmset_on_battery",
    "system_probe",
    "windows_ac_line",
]

log = logging.getLogger("desktop_agent.engine")

Run = Callable[[Sequence[str]], str | None]
"""Runs a command, returns its standard output, or ``None`` when it could not run or failed."""


def run_command(argv: Sequence[str]) -> str | None:
    """``argv``'s output, or ``None`` (not installed, failed, slower than 5 s)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s: %s", argv[0], exc)
        return None
    return done.stdout if done.returncode == 0 else None


class PowerProbe(Protocol):
    def metered(self) -> bool | None:
        """Whether the connection is metered (``None``: cannot tell)."""

    def on_battery(self) -> bool | None:
        """Whether the machine runs on battery (``None``: cannot tell)."""


class NoProbe:
    """A platform that cannot tell anything."""

    def metered(self) -> bool | None:
        return None

    def on_battery(self) -> bool | None:
        return None


_NM = ("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager")


def nm_metered(output: str) -> bool | None:
    """NetworkManager's ``NMMetered`` from ``busctl`` (``u 4``) or ``dbus-send`` (``variant
    uint32 4``) output: 1 yes and 3 guessed yes are metered, 2 and 4 are not, 0 unknown."""
    words = output.split()
    try:
        value = int(words[-1])
    except (IndexError, ValueError):
        return None
    return {1: True, 3: True, 2: False, 4: False}.get(value)


class LinuxProbe:
    """NetworkManager over D-Bus, and ``/sys/class/power_supply`` (both injectable for tests)."""

    def __init__(self, run: Run = run_command, sysfs: Path = Path("/sys/class/power_supply")):
        self._run = run
        self._sysfs = sysfs

    def metered(self) -> bool | None:
        out = self._run(
            ["busctl", "get-property", *_NM, "org.freedesktop.NetworkManager", "Metered"]
        )
        if out is None:
            out = self._run(
                [
                    "dbus-send",
                    "--system",
                    "--print-reply",
                    f"--dest={_NM[0]}",
                    _NM[1],
                    "org.freedesktop.DBus.Properties.Get",
                    f"string:{_NM[0]}",
                    "string:Metered",
                ]
            )
        return None if out is None else nm_metered(out)

    def on_battery(self) -> bool | None:
        try:
            supplies = sorted(self._sysfs.iterdir())
        except OSError:
            return None
        batteries: list[str] = []
        for supply in supplies:
            kind = _read(supply / "type")
            if kind in ("Mains", "USB", "USB_C", "USB_PD") and _read(supply / "online") == "1":
                return False
            if kind == "Battery" and _read(supply / "scope") != "Device":  # not a mouse's
                batteries.append(_read(supply / "status") or "")
        if not batteries:
            return None  # a desktop or a server: nothing to say
        return all(status == "Discharging" for status in batteries)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def pmset_on_battery(output: str) -> bool | None:
    """From ``pmset -g batt``: ``Now drawing from 'Battery Power'`` or ``'AC Power'``."""
    if "'Battery Power'" in output:
        return True
    if "'AC Power'" in output or "'UPS Power'" in output:
        return False
    return None


class MacProbe:
    def __init__(self, run: Run = run_command) -> None:
        self._run = run

    def metered(self) -> bool | None:
        return None  # Low Data Mode lives in the Network framework (see the module docstring)

    def on_battery(self) -> bool | None:
        out = self._run(["pmset", "-g", "batt"])
        return None if out is None else pmset_on_battery(out)


class _SystemPowerStatus(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 (ctypes wants a class attribute)
        ("ACLineStatus", ctypes.c_ubyte),
        ("BatteryFlag", ctypes.c_ubyte),
        ("BatteryLifePercent", ctypes.c_ubyte),
        ("SystemStatusFlag", ctypes.c_ubyte),
        ("BatteryLifeTime", ctypes.c_ulong),
        ("BatteryFullLifeTime", ctypes.c_ulong),
    ]


def windows_ac_line(status: int) -> bool | None:
    """``ACLineStatus``: 0 offline (on battery), 1 online, 255 unknown."""
    return {0: True, 1: False}.get(status)


class WindowsProbe:
    def __init__(self, status: Callable[[], int | None] | None = None) -> None:
        self._status = status or _ac_line_status

    def metered(self) -> bool | None:
        return None  # WinRT's connection cost (see the module docstring)

    def on_battery(self) -> bool | None:
        status = self._status()
        return None if status is None else windows_ac_line(status)


def _ac_line_status() -> int | None:
    windll = getattr(ctypes, "windll", None)
    if windll is None:
        return None
    status = _SystemPowerStatus()
    if not windll.kernel32.GetSystemPowerStatus(ctypes.byref(status)):
        return None
    return int(status.ACLineStatus)


def system_probe(platform: str = sys.platform) -> PowerProbe:
    """The probe for this machine."""
    if platform.startswith("linux"):
        return LinuxProbe()
    if platform == "darwin":
        return MacProbe()
    if platform == "win32":
        return WindowsProbe()
    return NoProbe()
