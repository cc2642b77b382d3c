"""When the daemon compacts: only once the server asks (the heartbeat's ``compact``), when nothing
else waits, once per request; and ``CompactDuty`` trying a failed compaction again an hour later."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from desktop_agent.engine import (
    AgentDaemon,
    AgentError,
    AgentSettings,
    CompactDuty,
    Dispatcher,
    RepoCompaction,
    Runner,
    Scheduler,
)
from tests.support.fakes import Clock, LeasingBackApp, engine_factory, plane_for


class RecordingCompactions:
    def __init__(self) -> None:
        self.asked = 0
        self.ran = 0
        self._wanted = False

    def ask(self) -> None:
        self.asked += 1
        self._wanted = True

    def due(self) -> bool:
        return self._wanted

    def run(self) -> None:
        self.ran += 1
        self._wanted = False


def run_daemon(fake: LeasingBackApp, tmp_path: Path, compactions: RecordingCompactions) -> None:
    plane = plane_for(fake)
    daemon = AgentDaemon(
        plane,
        Runner(plane, engine_factory(fake, tmp_path)),
        Dispatcher(Scheduler(None, None)),
        version="9.9",
        platform="linux",
        tick=0.05,
        compactions=compactions,
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while fake.heartbeats < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few ticks
    finally:
        daemon.stop()
        thread.join(20)
    assert not thread.is_alive()


def test_the_daemon_compacts_once_when_the_server_asks(tmp_path: Path) -> None:
    fake = LeasingBackApp([], Clock())
    quiet = RecordingCompactions()
    run_daemon(fake, tmp_path, quiet)
    assert (quiet.asked, quiet.ran) == (0, 0)

    fake.compact = {"requestedAt": "2026-12-02T07:00:00Z"}
    asked = RecordingCompactions()
    run_daemon(fake, tmp_path, asked)
    assert asked.asked >= 1 and asked.ran == 1


def test_a_failed_compaction_is_tried_again_an_hour_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    duty = CompactDuty(AgentSettings(), "key", monotonic=lambda: now[0])
    assert not duty.due()
    duty.ask()
    assert duty.due()

    def broken(*_args: object, **_kwargs: object) -> RepoCompaction:
        raise AgentError("the server is away")

    monkeypatch.setattr(RepoCompaction, "from_settings", broken)
    assert duty.run() is None
    assert not duty.due(), "not again at once"
    now[0] += 3599
    assert not duty.due()
    now[0] += 1
    assert duty.due(), "an hour later"
