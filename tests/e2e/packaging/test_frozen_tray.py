"""The frozen tray app (PyInstaller, a folder), copied out of the source tree and started with a
clean environment: ``--version``, then a real start on Qt's offscreen platform (and on X11 under
Xvfb when it is installed) that must print its start line and quit cleanly with status 0."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.packaging import EXE, clean_env, package_version
from tests.support.parallel import xvfb_run
from tests.support.paths import ROOT


def _installed(frozen_tray: Path, tmp_path: Path) -> Path:
    """Copy the build where a user would unpack it; the program inside."""
    target = tmp_path / "apps" / frozen_tray.name
    shutil.copytree(frozen_tray, target, symlinks=True)
    assert ROOT not in target.resolve().parents
    if sys.platform == "darwin":
        return target / "Contents" / "MacOS" / "BackApp"
    return target / f"backapp-tray{EXE}"


def _start(
    program: Path, tmp_path: Path, platform: str, wrapper: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / f"home-{platform}"
    env = clean_env(
        home,
        QT_QPA_PLATFORM=platform,
        BACKAPP_TRAY_QUIT_AFTER_MS="1500",
        BACKAPP_AGENT_CONFIG_DIR=str(home / "agent-config"),
    )
    return subprocess.run(
        [*(wrapper or []), str(program)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_the_frozen_tray_app_carries_its_qt_plugins_and_only_the_qt_it_uses(
    frozen_tray: Path,
) -> None:
    if sys.platform != "linux":
        pytest.skip("the layout checked here is the Linux build's")
    internal = frozen_tray / "_internal" / "PySide6"
    platforms = {p.name for p in (internal / "Qt" / "plugins" / "platforms").iterdir()}
    assert {"libqoffscreen.so", "libqxcb.so", "libqwayland.so"} <= platforms, platforms
    bindings = {p.name.split(".")[0] for p in internal.glob("Qt*.so")}
    assert bindings == {"QtCore", "QtGui", "QtWidgets", "QtNetwork", "QtDBus"}, bindings
    libs = {p.name for p in (frozen_tray / "_internal").iterdir()}
    assert not any(
        n.startswith(("libgtk-3", "libQt6WebEngine", "libQt6Qml", "libQt6Quick"))
        for n in libs | {p.name for p in (internal / "Qt" / "lib").iterdir()}
    )
    assert any(p.name.startswith("keyring-") for p in (frozen_tray / "_internal").iterdir())


def test_the_frozen_tray_app_carries_what_it_imports_only_when_used(frozen_tray: Path) -> None:
    """The recovery window derives a key with argon2id and wraps it with age (bech32 keys), each
    imported only when a code is made or used: a build without one fails only then."""
    from PyInstaller.archive.readers import CArchiveReader

    program = frozen_tray / f"backapp-tray{EXE}"
    if not program.is_file():
        pytest.skip("the program's archive is read from the Linux/Windows folder build")
    modules = set(CArchiveReader(str(program)).open_embedded_archive("PYZ.pyz").toc)
    for needed in ("argon2.low_level", "bech32", "pyrage"):
        assert needed in modules, needed
    # The snapshots' chunker, compiled (one of its modules is imported from C only).
    compiled = {
        p.name.split(".")[0] for p in (frozen_tray / "_internal" / "pyfastcdc" / "cy").iterdir()
    }
    assert {"chunk", "constants", "fastcdc"} <= compiled, compiled


def test_the_frozen_tray_app_starts_offscreen_and_quits_cleanly(
    frozen_tray: Path, tmp_path: Path
) -> None:
    program = _installed(frozen_tray, tmp_path)
    home = tmp_path / "home-version"
    version = subprocess.run(
        [str(program), "--version"],
        capture_output=True,
        text=True,
        env=clean_env(home),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"backapp-tray {package_version()}"

    done = _start(program, tmp_path, "offscreen")
    assert done.returncode == 0, done.stderr
    assert (
        f"backapp-tray {package_version()} started (Qt platform offscreen, no system tray)"
        in done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr and "Could not load" not in done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="X11 through Xvfb: Linux")
def test_the_frozen_tray_app_starts_on_x11(frozen_tray: Path, tmp_path: Path) -> None:
    """The xcb plugin and the libraries it needs from the bundle really load on an X server."""
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb xauth)")
    program = _installed(frozen_tray, tmp_path)
    done = _start(program, tmp_path, "xcb", xvfb_run("1024x768x24"))
    assert done.returncode == 0, done.stderr
    assert "started (Qt platform xcb" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Could not load" not in done.stderr
