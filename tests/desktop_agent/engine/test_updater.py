"""The agent's updater against builds served over HTTP on loopback: tiny executable scripts stand
in for frozen builds (what matters is what the updater does with the files: download, check,
trial run, swap, rollback); the frozen A-to-B update is in tests/e2e/packaging/."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from desktop_agent.engine import Heartbeat, UpdateDuty, UpdateOffer, Updater, offer_from
from desktop_agent.engine.releases import sign_release

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the builds are shell scripts")

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
PLATFORM = sys.platform


def build(version: str, *, status: int = 0, says: str | None = None, sleep: int = 0) -> bytes:
    """A stand-in for a frozen agent: answers ``--version`` as a build of ``version`` would."""
    said = says if says is not None else f"backapp-agent {version}"
    return (
        f'#!/bin/sh\n[ "$1" = --version ] && {{ sleep {sleep}; echo "{said}"; exit {status}; }}\n'
        f'echo "{version} ran with: $*; reset=$PYINSTALLER_RESET_ENVIRONMENT"\n'
    ).encode()


@dataclass
class Files:
    """What the loopback server serves, and which paths were asked for."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)


@pytest.fixture
def served() -> Iterator[tuple[str, Files]]:
    files = Files()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            files.asked.append(self.path)
            body = files.bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def offer(
    base: str,
    files: Files,
    version: str,
    body: bytes,
    *,
    served: bytes | None = None,
    key: Ed25519PrivateKey = KEY,
    platform: str = PLATFORM,
) -> UpdateOffer:
    """Publish ``body`` as ``version`` (signed by ``key`` for ``platform``); the server sends
    ``served`` instead when given (a tampered bucket)."""
    sha, size = hashlib.sha256(body).hexdigest(), len(body)
    files.bodies[f"/releases/{version}"] = body if served is None else served
    return UpdateOffer(
        version=version,
        url=f"{base}/releases/{version}",
        sha256=sha,
        size=size,
        signature=sign_release(key, platform, version, sha, size),
    )


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Agent:
    """An installed stand-in build 1.0.0 and the updater that would run inside it."""

    exe: Path
    state: Path
    clock: Clock
    execs: list[tuple[str, list[str], dict[str, str]]]

    def updater(self, current: str = "1.0.0", **kwargs: Any) -> Updater:
        def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
            self.execs.append((path, argv, env))

        return Updater(
            self.state,
            executable=self.exe,
            current=current,
            platform=PLATFORM,
            kind=kwargs.pop("kind", "file"),
            public_key=KEY.public_key,
            now=self.clock,
            execve=execve,
            **kwargs,
        )

    def version(self, path: Path | None = None) -> str:
        done = subprocess.run([str(path or self.exe), "--version"], capture_output=True, text=True)
        return done.stdout.strip()

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.exe.parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    exe = tmp_path / "bin" / "backapp-agent"
    exe.parent.mkdir()
    exe.write_bytes(build("1.0.0"))
    exe.chmod(0o755)
    return Agent(exe, tmp_path / "state", Clock(), [])


def test_a_good_build_is_swapped_in_keeping_the_previous_and_restarted_as(
    agent: Agent, served: tuple[str, Files], caplog: pytest.LogCaptureFixture
) -> None:
    base, files = served
    updater = agent.updater()
    good = offer(base, files, "1.0.1", build("1.0.1"))
    assert updater.plan(good).status == "available"

    with caplog.at_level(logging.INFO, logger="desktop_agent.engine.update"):
        result = updater.apply(good)

    assert result.status == "updated", result
    assert agent.version() == "backapp-agent 1.0.1"
    assert agent.version(agent.exe.with_name("backapp-agent.previous")) == "backapp-agent 1.0.0"
    assert stat.S_IMODE(agent.exe.stat().st_mode) & 0o111
    assert agent.leftovers() == []  # no download left behind
    pending = updater.store.pending()
    assert pending is not None
    assert (pending.from_version, pending.to_version) == ("1.0.0", "1.0.1")
    assert pending.deadline == agent.clock.at + timedelta(minutes=5)
    assert "updated 1.0.0 to 1.0.1" in caplog.text

    # The restart: the same arguments, through a bootloader that starts afresh.
    with pytest.raises(SystemExit):
        updater.restart(["daemon", "--tick", "1"])
    [(path, argv, env)] = agent.execs
    assert path == str(agent.exe) and argv == [str(agent.exe), "daemon", "--tick", "1"]
    assert env["PYINSTALLER_RESET_ENVIRONMENT"] == "1"


def test_the_new_build_confirms_with_its_first_heartbeat(
    agent: Agent, served: tuple[str, Files]
) -> None:
    base, files = served
    assert agent.updater().apply(offer(base, files, "1.0.1", build("1.0.1"))).status == "updated"

    new = agent.updater(current="1.0.1")  # the restarted process
    assert new.startup() is False and new.pending is not None
    agent.clock.at += timedelta(minutes=1)
    assert new.confirm() is True
    assert new.store.pending() is None and new.pending is None
    agent.clock.at += timedelta(hours=1)
    assert agent.updater(current="1.0.1").startup() is False  # nothing to roll back any more
    assert agent.version() == "backapp-agent 1.0.1"


def test_a_new_build_that_never_heartbeats_is_rolled_back_at_its_next_start(
    agent: Agent, served: tuple[str, Files], caplog: pytest.LogCaptureFixture
) -> None:
    base, files = served
    good = offer(base, files, "1.0.1", build("1.0.1"))
    assert agent.updater().apply(good).status == "updated"
    agent.clock.at += timedelta(minutes=6)

    new = agent.updater(current="1.0.1")
    with caplog.at_level(logging.INFO, logger="desktop_agent.engine.update"):
        assert new.startup() is True  # it must restart: into the previous build
    assert agent.version() == "backapp-agent 1.0.0"
    assert not agent.exe.with_name("backapp-agent.previous").exists()
    assert new.store.pending() is None
    assert "update 1.0.1 rolled back to 1.0.0" in caplog.text
    assert "update 1.0.1 refused: it did not heartbeat in time" in caplog.text
    # The old build, back, does not fetch the refused version again for a day.
    old = agent.updater()
    assert old.startup() is False
    assert old.plan(good).status == "skipped"
    agent.clock.at += timedelta(hours=25)
    assert old.plan(good).status == "available"


def test_a_running_new_build_past_its_deadline_rolls_back_too(
    agent: Agent, served: tuple[str, Files]
) -> None:
    base, files = served
    assert agent.updater().apply(offer(base, files, "1.0.1", build("1.0.1"))).status == "updated"
    new = agent.updater(current="1.0.1")
    assert new.startup() is False
    assert new.overdue() is False
    agent.clock.at += timedelta(minutes=5, seconds=1)  # its heartbeats all failed meanwhile
    assert new.overdue() is True
    assert agent.version() == "backapp-agent 1.0.0"


def test_the_old_build_starting_after_the_deadline_rolls_back_without_restarting(
    agent: Agent, served: tuple[str, Files]
) -> None:
    base, files = served
    assert agent.updater().apply(offer(base, files, "1.0.1", build("1.0.1"))).status == "updated"
    agent.clock.at += timedelta(minutes=10)
    old = agent.updater()  # e.g. a daemon of the old build that kept running from memory
    assert old.confirm() is False  # only the new build's heartbeat proves the new build
    assert old.startup() is False
    assert agent.version() == "backapp-agent 1.0.0"


@pytest.mark.parametrize(
    ("served_body", "words"),
    [
        (build("1.0.1") + b"# more\n", "larger than its"),
        (build("1.0.1")[:-5], "the download has"),
        (build("1.0.1").replace(b"ran", b"RAN"), "does not match its SHA-256"),
    ],
    ids=["too-long", "too-short", "wrong-hash"],
)
def test_a_download_that_is_not_the_release_is_refused(
    agent: Agent,
    served: tuple[str, Files],
    caplog: pytest.LogCaptureFixture,
    served_body: bytes,
    words: str,
) -> None:
    base, files = served
    tampered = offer(base, files, "1.0.1", build("1.0.1"), served=served_body)
    updater = agent.updater()
    with caplog.at_level(logging.INFO, logger="desktop_agent.engine.update"):
        result = updater.apply(tampered)
    assert result.status == "refused" and words in result.message
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("update 1.0.1 refused: ") and words in lines[0]
    assert agent.version() == "backapp-agent 1.0.0"
    assert agent.leftovers() == [] and not agent.exe.with_name("backapp-agent.previous").exists()
    assert updater.store.pending() is None

    # Not fetched again for a day, by this process or the next; a person asking retries it.
    asked = len(files.asked)
    assert updater.apply(tampered).status == "skipped"
    assert agent.updater().apply(tampered).status == "skipped"
    assert len(files.asked) == asked
    assert agent.updater().apply(tampered, manual=True).status == "refused"
    assert len(files.asked) == asked + 1


@pytest.mark.parametrize(
    ("signed_by", "platform"),
    [(OTHER_KEY, PLATFORM), (KEY, "win32" if PLATFORM != "win32" else "linux")],
    ids=["another-key", "another-platform"],
)
def test_a_build_the_release_key_did_not_sign_for_this_agent_is_never_downloaded(
    agent: Agent,
    served: tuple[str, Files],
    caplog: pytest.LogCaptureFixture,
    signed_by: Ed25519PrivateKey,
    platform: str,
) -> None:
    base, files = served
    bad = offer(base, files, "1.0.1", build("1.0.1"), key=signed_by, platform=platform)
    with caplog.at_level(logging.ERROR, logger="desktop_agent.engine.update"):
        result = agent.updater().apply(bad)
    assert result.status == "refused"
    assert "update 1.0.1 refused: the build is not signed by the release key" in caplog.text
    assert files.asked == [] and agent.leftovers() == []
    assert agent.version() == "backapp-agent 1.0.0"


def test_an_offer_for_an_older_signed_version_relabelled_newer_is_refused(
    agent: Agent, served: tuple[str, Files]
) -> None:
    base, files = served
    genuine = offer(base, files, "0.9.0", build("0.9.0"))
    relabelled = msgspec.structs.replace(genuine, version="1.0.1")
    result = agent.updater().apply(relabelled)
    assert result.status == "refused" and "not signed by the release key" in result.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (build("1.0.1", status=3), "exited with status 3"),
        (build("1.0.1", says="backapp-agent 1.0.0"), "says it is 'backapp-agent 1.0.0'"),
        (build("1.0.1", sleep=5), "did not answer --version within 1 s"),
        (b"\x7fELF not really a program", "does not start"),
    ],
    ids=["fails", "wrong-version", "hangs", "not-a-program"],
)
def test_a_build_that_fails_its_trial_run_is_refused_and_nothing_is_swapped(
    agent: Agent, served: tuple[str, Files], body: bytes, words: str
) -> None:
    base, files = served
    result = agent.updater(trial_timeout=1).apply(offer(base, files, "1.0.1", body))
    assert result.status == "refused" and words in result.message, result
    assert agent.version() == "backapp-agent 1.0.0"
    assert agent.leftovers() == [] and not agent.exe.with_name("backapp-agent.previous").exists()
    assert agent.updater().plan(offer(base, files, "1.0.1", body)).status == "skipped"


def test_a_failed_download_is_tried_again_later_without_refusing_the_version(
    agent: Agent, served: tuple[str, Files]
) -> None:
    base, files = served
    good = offer(base, files, "1.0.1", build("1.0.1"))
    del files.bodies["/releases/1.0.1"]  # e.g. the pre-signed URL expired
    updater = agent.updater()
    result = updater.apply(good)
    assert result.status == "failed" and "HTTP 404" in result.message
    assert updater.plan(good).status == "skipped"  # not within the hour, by this process
    assert agent.updater().plan(good).status == "available"  # nothing was refused
    assert updater.store.refused("1.0.1", agent.clock()) is None


def test_a_folder_it_cannot_write_is_said_before_anything_is_downloaded(
    agent: Agent, served: tuple[str, Files], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, files = served
    real_access = os.access
    folder = agent.exe.parent

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        # What a service user sees in /usr/local/bin, or systemd's ProtectSystem=strict (root
        # runs these tests and may write anywhere).
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    result = agent.updater().apply(offer(base, files, "1.0.1", build("1.0.1")))
    assert result.status == "unsupported" and f"cannot write in {folder}" in result.message
    assert files.asked == [] and agent.version() == "backapp-agent 1.0.0"


def test_installs_that_are_not_one_frozen_file_leave_updates_to_others(
    agent: Agent, served: tuple[str, Files], caplog: pytest.LogCaptureFixture
) -> None:
    base, files = served
    good = offer(base, files, "1.0.1", build("1.0.1"))
    for kind, words in (("package", "package manager"), ("folder", "its installer")):
        updater = agent.updater(kind=kind)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="desktop_agent.engine.update"):
            assert updater.apply(good).status == "unsupported"
            assert updater.apply(good).status == "unsupported"
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and words in said[0], said  # said once
    assert files.asked == [] and agent.version() == "backapp-agent 1.0.0"


def test_the_same_version_or_no_offer_is_up_to_date(agent: Agent) -> None:
    updater = agent.updater()
    assert updater.plan(None).status == "current"
    same = UpdateOffer(version="1.0.0", url="http://x", sha256="0" * 64, size=1, signature="")
    assert updater.apply(same).status == "current"


def test_the_heartbeat_update_field_is_optional_and_a_malformed_one_is_ignored() -> None:
    old_server = msgspec.json.decode(b'{"status": "online"}', type=Heartbeat)
    assert old_server.update is None and offer_from(old_server.update) is None
    new_server = msgspec.json.decode(
        b'{"update": {"version": "1.2.4", "url": "https://s3/x", "sha256": "'
        + b"a" * 64
        + b'", "size": 12, "signature": "c2ln"}}',
        type=Heartbeat,
    )
    parsed = offer_from(new_server.update)
    assert parsed is not None and (parsed.version, parsed.size) == ("1.2.4", 12)
    broken = msgspec.json.decode(b'{"update": {"version": 3}}', type=Heartbeat)
    assert offer_from(broken.update) is None


def test_the_duty_updates_only_when_enabled_and_notices_a_replaced_executable(
    agent: Agent, served: tuple[str, Files], caplog: pytest.LogCaptureFixture
) -> None:
    base, files = served
    good = offer(base, files, "1.0.1", build("1.0.1"))
    beat = Heartbeat(update=msgspec.to_builtins(good))

    off = UpdateDuty(agent.updater(), enabled=False)
    off.heard(beat)
    with caplog.at_level(logging.INFO, logger="desktop_agent.engine.update"):
        assert off.due() is False and off.due() is False
    assert caplog.text.count("automatic updates are off") == 1 and files.asked == []

    # Another process (``backapp-agent update``) swaps the build: the daemon restarts into it.
    watching = UpdateDuty(agent.updater())
    assert watching.due() is False
    assert agent.updater().apply(good, manual=True).status == "updated"
    assert watching.due() is True and watching.run() is True

    # The duty of the new build: its heartbeat confirms the update, and it is up to date.
    new = UpdateDuty(agent.updater(current="1.0.1"))
    new.heard(beat)
    assert new.updater.store.pending() is None and new.due() is False
