"""``backapp-agent update [--check] [--json]`` in-process against the in-memory BackApp: what it
says for each case, and its exit status. The updater's own work (download, checks, trial run,
swap, rollback) is tested in tests/desktop_agent/engine/test_updater.py, the frozen A-to-B update
in tests/e2e/packaging/."""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from desktop_agent import __version__, cli
from desktop_agent.engine import Updater, config_dir
from desktop_agent.engine.releases import sign_release
from tests.support.fakes import STORAGE_HOST, FakeBackApp

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the builds are shell scripts")

KEY = Ed25519PrivateKey.generate()


def script(version: str) -> bytes:
    return f'#!/bin/sh\necho "backapp-agent {version}"\n'.encode()


def offer(fake: FakeBackApp, version: str, body: bytes, served: bytes | None = None) -> None:
    sha = hashlib.sha256(body).hexdigest()
    fake.downloads[f"/releases/{version}"] = body if served is None else served
    fake.update = {
        "version": version,
        "url": f"https://{STORAGE_HOST}/releases/{version}",
        "sha256": sha,
        "size": len(body),
        "signature": sign_release(KEY, sys.platform, version, sha, len(body)),
    }


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, list[Any]]:
    """The command's updater as a single-file build at ``bin/backapp-agent`` would have it."""
    exe = tmp_path / "bin" / "backapp-agent"
    exe.parent.mkdir()
    exe.write_bytes(script(__version__))
    exe.chmod(0o755)
    execs: list[Any] = []

    def make(state_dir: Path, **kwargs: Any) -> Updater:
        return Updater(
            state_dir,
            executable=exe,
            kind="file",
            public_key=KEY.public_key,
            execve=lambda *call: execs.append(call),
            **kwargs,
        )

    monkeypatch.setattr("desktop_agent.cli.update.Updater", make)
    return exe, execs


def test_up_to_date_with_a_server_that_offers_nothing(
    configured: FakeBackApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["update", "--check"]) == 0
    assert capsys.readouterr().out == f"Up to date ({__version__}).\n"
    assert cli.main(["update", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "current"


def test_a_package_install_says_who_updates_it(
    configured: FakeBackApp, capsys: pytest.CaptureFixture[str]
) -> None:
    offer(configured, "99.0.0", script("99.0.0"))
    assert cli.main(["update"]) == 2
    out = capsys.readouterr().out
    assert "99.0.0 is available; this agent runs from a Python package" in out
    assert "package manager" in out
    assert cli.main(["update", "--check", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["status"] == "unsupported"


def test_check_then_update_then_the_restarted_build_confirms(
    configured: FakeBackApp,
    frozen: tuple[Path, list[Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exe, execs = frozen
    offer(configured, "99.0.0", script("99.0.0"))
    assert cli.main(["update", "--check"]) == 0
    assert capsys.readouterr().out == (
        f"99.0.0 is available (this is {__version__}). Run backapp-agent update to install it.\n"
    )
    assert exe.read_bytes() == script(__version__)  # --check changes nothing

    monkeypatch.setattr(sys, "argv", ["backapp-agent", "update", "--json"])
    with pytest.raises(SystemExit):  # the recorded exec returns: restart() leaves anyway
        cli.main(["update", "--json"])
    assert exe.read_bytes() == script("99.0.0")
    [(path, argv, _env)] = execs
    assert argv == [path, "update", "--json"]
    assert capsys.readouterr().out == ""  # the restarted build prints the one JSON object

    # The restarted build (99.0.0): its heartbeat confirms the update, and it says so.
    monkeypatch.setattr(
        "desktop_agent.cli.update.Updater",
        partial(Updater, executable=exe, kind="file", public_key=KEY.public_key, current="99.0.0"),
    )
    assert cli.main(["update", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["status"] == "updated" and said["current"] == __version__
    assert said["version"] == "99.0.0" and "confirmed by the server" in said["message"]


def test_a_tampered_build_is_refused_with_exit_status_1(
    configured: FakeBackApp,
    frozen: tuple[Path, list[Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    exe, execs = frozen
    offer(configured, "99.0.0", script("99.0.0"), served=script("99.0.1"))
    assert cli.main(["update"]) == 1
    err = capsys.readouterr().err
    assert "update 99.0.0 refused: the download does not match its SHA-256" in err
    assert exe.read_bytes() == script(__version__) and execs == []
    # Asked by hand again, it is tried again (the daemon would wait a day).
    assert cli.main(["update", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "refused"


def test_a_one_shot_run_confirms_a_fresh_update_with_its_heartbeat(
    configured: FakeBackApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = config_dir()
    exe = tmp_path / "backapp-agent"
    marker = state / "update-pending.json"
    marker.write_text(
        json.dumps(
            {
                "from": "0.0.1",
                "to": __version__,
                "deadline": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
                "executable": str(exe),
            }
        )
    )
    monkeypatch.setattr(
        "desktop_agent.cli.run.Updater", partial(Updater, executable=exe, kind="file")
    )
    assert cli.main(["run", "--json"]) == 0
    assert not marker.exists()
