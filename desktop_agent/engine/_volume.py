"""Volume snapshots for open files (``options.snapshot``): the seam, not yet part of a backup.

- ``"vss"``, Windows: a shadow copy of each volume the sources are on (``Win32_ShadowCopy.Create``
  through PowerShell; needs an administrator, which the agent service running as SYSTEM is), read
  through its ``\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopyN`` device, deleted after
  (``vssadmin delete shadows /shadow={id} /quiet``).
- ``"apfs"``, macOS: a local APFS snapshot (``tmutil localsnapshot``) mounted read-only
  (``mount_apfs -s``; needs Full Disk Access), unmounted and deleted after
  (``tmutil deletelocalsnapshots``).

``VssSnapshot`` and ``ApfsSnapshot`` make a snapshot and say where each source is inside it
(``create``), and remove it (``remove``). They are unit-tested here with recorded command outputs;
they cannot be run on the Linux machines the tests run on. Reading the sources from the snapshot
while keeping their own names in the archive is not wired into the scan yet, so a config that
asks for a snapshot fails with a reason in words (``refuse_snapshot``) rather than silently
backing up the live files. On Linux, LVM, Btrfs and ZFS snapshots are made by a ``preCommand``
(docs/agent.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PureWindowsPath
from typing import Protocol

from ._errors import ConfigurationError

__all__ = [
    "ApfsSnapshot",
    "VolumeSnapshot",
    "VssSnapshot",
    "refuse_snapshot",
    "snapshot_for",
]

Run = Callable[[Sequence[str]], tuple[int, str]]
"""Runs a command: ``(exit status, output)``."""
KINDS = {"vss": ("win32", "Windows"), "apfs": ("darwin", "macOS")}


def _run(argv: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr


class VolumeSnapshot(Protocol):
    def create(self, sources: Sequence[str]) -> Mapping[str, str]:
        """Snapshot the volumes of ``sources``; where each source is inside the snapshot."""

    def remove(self) -> None:
        """Delete the snapshot (and unmount it); safe to call twice."""


class VssSnapshot:
    """A Windows shadow copy per volume (drive letter) of the sources."""

    def __init__(self, run: Run = _run) -> None:
        self._run = run
        self.shadows: dict[str, tuple[str, str]] = {}
        """Volume (``C:\\``) -> (shadow id, device path)."""

    def create(self, sources: Sequence[str]) -> Mapping[str, str]:
        mapped: dict[str, str] = {}
        for source in sources:
            path = PureWindowsPath(source)
            volume = path.anchor
            if not path.drive or not volume.endswith("\\"):
                raise ConfigurationError(f"snapshot vss: {source!r} is not on a local drive")
            if volume not in self.shadows:
                self.shadows[volume] = self._shadow(volume)
            device = self.shadows[volume][1].rstrip("\\")
            mapped[source] = device + "\\" + str(path.relative_to(volume))
        return mapped

    def _shadow(self, volume: str) -> tuple[str, str]:
        script = (
            f"$r = (Get-WmiObject -List Win32_ShadowCopy).Create('{volume}', 'ClientAccessible'); "
            "if ($r.ReturnValue -ne 0) { Write-Output ('error ' + $r.ReturnValue); exit 1 }; "
            "$s = Get-WmiObject Win32_ShadowCopy | Where-Object { $_.ID -eq $r.ShadowID }; "
            "Write-Output $s.ID; Write-Output $s.DeviceObject"
        )
        code, out = self._run(["powershell", "-NoProfile", "-NonInteractive", "-Command", script])
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if code != 0 or len(lines) < 2 or not lines[1].startswith("\\\\?\\GLOBALROOT"):
            raise ConfigurationError(
                f"snapshot vss: could not make a shadow copy of {volume} (it needs an "
                f"administrator; the agent service runs as SYSTEM): {out.strip()[:500]}"
            )
        return lines[0], lines[1]

    def remove(self) -> None:
        for shadow_id, _ in self.shadows.values():
            self._run(["vssadmin", "delete", "shadows", f"/shadow={shadow_id}", "/quiet"])
        self.shadows.clear()


_TMUTIL_DATE = re.compile(r"(\d{4}-\d{2}-\d{2}-\d{6})")


class ApfsSnapshot:
    """A local APFS snapshot of the data volume, mounted read-only."""

    def __init__(self, run: Run = _run, volume: str = "/System/Volumes/Data") -> None:
        self._run = run
        self.volume = volume
        self.date: str | None = None
        self.mount: Path | None = None

    def create(self, sources: Sequence[str]) -> Mapping[str, str]:
        code, out = self._run(["tmutil", "localsnapshot"])
        found = _TMUTIL_DATE.search(out)
        if code != 0 or found is None:
            raise ConfigurationError(f"snapshot apfs: tmutil localsnapshot failed: {out[:500]}")
        self.date = found.group(1)
        self.mount = Path(tempfile.mkdtemp(prefix="backapp-apfs-"))
        name = f"com.apple.TimeMachine.{self.date}.local"
        code, out = self._run(
            ["mount_apfs", "-o", "nobrowse,ro", "-s", name, self.volume, str(self.mount)]
        )
        if code != 0:
            self.remove()
            raise ConfigurationError(
                f"snapshot apfs: could not mount the snapshot (the agent needs Full Disk "
                f"Access): {out[:500]}"
            )
        return {s: str(self.mount / Path(s).relative_to("/")) for s in sources}

    def remove(self) -> None:
        if self.mount is not None:
            self._run(["umount", str(self.mount)])
            try:
                self.mount.rmdir()
            except OSError:
                pass
            self.mount = None
        if self.date is not None:
            self._run(["tmutil", "deletelocalsnapshots", self.date])
            self.date = None


def snapshot_for(kind: str, platform: str = sys.platform, run: Run = _run) -> VolumeSnapshot:
    """The snapshot ``kind`` on this ``platform``; ``ConfigurationError`` in words otherwise."""
    if kind not in KINDS:
        raise ConfigurationError(f"snapshot: unknown kind {kind!r} (vss or apfs)")
    wanted, name = KINDS[kind]
    if platform != wanted:
        raise ConfigurationError(
            f"this configuration asks for a {kind} snapshot (options.snapshot), which only "
            f"{name} makes; this machine runs {platform}. On Linux, make an LVM, Btrfs or ZFS "
            "snapshot with a preCommand instead"
        )
    return VssSnapshot(run) if kind == "vss" else ApfsSnapshot(run)


def refuse_snapshot(kind: str, platform: str = sys.platform) -> None:
    """A backup that asks for a volume snapshot stops here, in words (see the module docstring)."""
    snapshot_for(kind, platform)  # the wrong platform says so first
    raise ConfigurationError(
        f"this configuration asks for a {kind} snapshot (options.snapshot); this agent cannot "
        "back up from volume snapshots yet. Leave options.snapshot out to back up the live "
        "files, or make the snapshot with a preCommand"
    )
