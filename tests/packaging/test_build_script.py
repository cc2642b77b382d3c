"""``packaging/build.py``'s command line and helpers (the builds themselves are exercised by
``.ci/run`` and checked by ``test_frozen_*``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.support.packaging import package_version
from tests.support.paths import ROOT

SCRIPT = ROOT / "packaging" / "build.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("backapp_build", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unknown_target_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "backapp-everything", "--dist", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid choice: 'backapp-everything'" in done.stderr
    assert not (tmp_path / "dist").exists()


def test_helpers() -> None:
    build = _module()
    assert build.package_version() == package_version()
    assert build.human(15_990_000) == "15.2 MiB" and build.human(512) == "512 B"
    tag = build.platform_tag()
    assert tag.split("-")[0] in ("linux", "macos", "windows") and "amd64" not in tag
