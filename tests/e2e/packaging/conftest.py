"""The frozen (PyInstaller) builds under test.

``BACKAPP_TEST_FROZEN_AGENT`` / ``BACKAPP_TEST_FROZEN_TRAY`` name builds made earlier
(``python packaging/build.py``; ``.ci/run`` builds them before pytest and exports both, so there a
missing build FAILS). Unset, the tests build what they need into a temporary folder when
``BACKAPP_TEST_BUILD_FROZEN=1``, and are skipped otherwise (a build takes a minute or two). The
update test needs a second agent build, the next version (``frozen_agent_next``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.packaging import (
    ENV_AGENT,
    ENV_AGENT_NEXT,
    ENV_BUILD,
    ENV_TRAY,
    EXE,
    build,
    build_from_env,
    frozen_version,
    next_version,
)


@pytest.fixture(scope="session")
def frozen_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-file ``backapp-agent`` build."""
    found = build_from_env(ENV_AGENT)
    if found is not None:
        return found
    if os.environ.get(ENV_BUILD) != "1":
        pytest.skip(
            f"no frozen agent: set {ENV_AGENT}=dist/backapp-agent after "
            f"`python packaging/build.py backapp-agent`, or {ENV_BUILD}=1 to build it here"
        )
    return build("backapp-agent", tmp_path_factory.mktemp("build-agent")) / f"backapp-agent{EXE}"


@pytest.fixture(scope="session")
def frozen_agent_next(frozen_agent: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second single-file agent, built as the next version after ``frozen_agent``'s (the
    update test's build B): built here once per session (a minute or two), unless
    ``BACKAPP_TEST_FROZEN_AGENT_NEXT`` names one (``build.py backapp-agent --version V``)."""
    version = next_version(frozen_version(frozen_agent))
    found = build_from_env(ENV_AGENT_NEXT)
    if found is not None:
        assert frozen_version(found) == version, f"{ENV_AGENT_NEXT} must be built as {version}"
        return found
    dist = build("backapp-agent", tmp_path_factory.mktemp("build-agent-next"), version)
    return dist / f"backapp-agent{EXE}"


@pytest.fixture(scope="session")
def frozen_tray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tray app's folder (``backapp-tray/``; ``BackApp.app`` on macOS)."""
    found = build_from_env(ENV_TRAY)
    if found is not None:
        return found
    if os.environ.get(ENV_BUILD) != "1":
        pytest.skip(
            f"no frozen tray app: set {ENV_TRAY}=dist/backapp-tray after "
            f"`python packaging/build.py backapp-tray`, or {ENV_BUILD}=1 to build it here"
        )
    dist = build("backapp-tray", tmp_path_factory.mktemp("build-tray"))
    return dist / ("BackApp.app" if sys.platform == "darwin" else "backapp-tray")
