"""The installers' builds (PyInstaller): where they are, how to make one, and the environment of a
user's fresh session to run them in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

ENV_AGENT = "BACKAPP_TEST_FROZEN_AGENT"
ENV_TRAY = "BACKAPP_TEST_FROZEN_TRAY"
ENV_BUILD = "BACKAPP_TEST_BUILD_FROZEN"
ENV_AGENT_NEXT = "BACKAPP_TEST_FROZEN_AGENT_NEXT"
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


def build_from_env(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    path = Path(value)
    path = path if path.is_absolute() else ROOT / path
    if not path.exists():
        pytest.fail(f"{name}={value}, but there is no such build (python packaging/build.py)")
    return path


def build(target: str, tmp: Path, version: str | None = None) -> Path:
    """Build ``target`` into ``tmp/dist`` (as ``version`` when given: ``build.py --version``)."""
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
            *(["--version", version] if version is not None else []),
        ],
        check=True,
        cwd=ROOT,
    )
    return dist


def frozen_version(program: Path) -> str:
    """What a frozen agent says its version is (``--version``)."""
    done = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.split()[-1]


def next_version(version: str, step: int = 1) -> str:
    """``version`` with its third number ``step`` higher (0.1.0 -> 0.1.1)."""
    from packaging.version import Version

    major, minor, micro = (list(Version(version).release) + [0, 0, 0])[:3]
    return f"{major}.{minor}.{micro + step}"
