"""The frozen (PyInstaller) builds under test.

``BACKAPP_TEST_FROZEN_AGENT`` / ``BACKAPP_TEST_FROZEN_TRAY`` name builds made earlier
(``python packaging/build.py``; ``.ci/run`` builds them before pytest and exports both, so there a
missing build FAILS). Unset, the tests build what they need into a temporary folder when
``BACKAPP_TEST_BUILD_FROZEN=1``, and are skipped otherwise (a build takes a minute or two).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_AGENT = "BACKAPP_TEST_FROZEN_AGENT"
ENV_TRAY = "BACKAPP_TEST_FROZEN_TRAY"
ENV_BUILD = "BACKAPP_TEST_BUILD_FROZEN"
EXE = ".exe" if sys.platform == "win32" else ""


def package_version() -> str:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a user's fresh session has: no PYTHONPATH, no virtualenv, no BackApp settings, no
    session bus (so no keychain on Linux), a home folder of its own."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
    }
    if sys.platform == "win32":  # pragma: no cover - CI builds Windows elsewhere
        env.update({k: v for k, v in os.environ.items() if k.upper() in ("SYSTEMROOT", "TEMP")})
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(extra)
    return env


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    path = Path(value)
    path = path if path.is_absolute() else ROOT / path
    if not path.exists():
        pytest.fail(f"{name}={value}, but there is no such build (python packaging/build.py)")
    return path


def _build(target: str, tmp: Path) -> Path:
    dist, work = tmp / "dist", tmp / "work"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "packaging" / "build.py"),
            target,
            "--dist",
            str(dist),
            "--work",
            str(work),
        ],
        check=True,
        cwd=ROOT,
    )
    return dist


@pytest.fixture(scope="session")
def frozen_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-file ``backapp-agent`` build."""
    found = _from_env(ENV_AGENT)
    if found is not None:
        return found
    if os.environ.get(ENV_BUILD) != "1":
        pytest.skip(
            f"no frozen agent: set {ENV_AGENT}=dist/backapp-agent after "
            f"`python packaging/build.py backapp-agent`, or {ENV_BUILD}=1 to build it here"
        )
    return _build("backapp-agent", tmp_path_factory.mktemp("build-agent")) / f"backapp-agent{EXE}"


@pytest.fixture(scope="session")
def frozen_tray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tray app's folder (``backapp-tray/``; ``BackApp.app`` on macOS)."""
    found = _from_env(ENV_TRAY)
    if found is not None:
        return found
    if os.environ.get(ENV_BUILD) != "1":
        pytest.skip(
            f"no frozen tray app: set {ENV_TRAY}=dist/backapp-tray after "
            f"`python packaging/build.py backapp-tray`, or {ENV_BUILD}=1 to build it here"
        )
    dist = _build("backapp-tray", tmp_path_factory.mktemp("build-tray"))
    return dist / ("BackApp.app" if sys.platform == "darwin" else "backapp-tray")
