"""The daemon installs agent updates only at an idle moment: never while a backup runs or waits,
and it stops to restart once one is in place. Against the in-memory BackApp of
``tests/support/fakes.py`` with the real engine and a recording stand-in for ``UpdateDuty``
(the updater itself: test_updater.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from desktop_agent.engine import (
    AgentDaemon,
    Dispatcher,
    Event,
    Heartbeat,
    Runner,
    ScanStarted,
    Scheduler,
)
from tests.support.fakes import Clock, LeasingBackApp, config, engine_factory, plane_for

WAIT = 30.0


class RecordingUpdates:
    """An update always due; records what ran when it was installed."""

    def __init__(self, daemon_ref: list[AgentDaemon], fake: LeasingBackApp) -> None:
        self.daemon_ref = daemon_ref
        self.fake = fake
        self.beats = 0
        self.installed: list[tuple[list[str], list[str]]] = []
        self.rolled_back = False

    def heard(self, beat: Heartbeat) -> None:
        self.beats += 1

    def due(self) -> bool:
        return self.beats > 0

    def run(self) -> bool:
        daemon = self.daemon_ref[0]
        self.installed.append((daemon.running, statuses(self.fake)))
        return True

    def overdue(self) -> bool:
        return self.rolled_back


def statuses(fake: LeasingBackApp) -> list[str]:
    return [log.status for log in fake.logs.values()]


def _daemon(
    tmp_path: Path, *, request: bool, hold: threading.Event
) -> tuple[AgentDaemon, LeasingBackApp, RecordingUpdates]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a" * 5000)
    fake = LeasingBackApp([config("c1", str(src))], Clock())
    if request:
        fake.run_requests = [{"id": "rr-1", "configId": "c1"}]

    def events(event: Event) -> None:
        if isinstance(event, ScanStarted):
            hold.wait(WAIT)

    plane = plane_for(fake)
    ref: list[AgentDaemon] = []
    updates = RecordingUpdates(ref, fake)
    daemon = AgentDaemon(
        plane,
        Runner(plane, engine_factory(fake, tmp_path), events=events),
        Dispatcher(Scheduler(None, None)),
        version="9.9",
        platform="linux",
        tick=0.05,
        updates=updates,
    )
    ref.append(daemon)
    return daemon, fake, updates


def test_the_update_waits_for_the_backup_then_the_daemon_stops_to_restart(tmp_path: Path) -> None:
    hold = threading.Event()
    daemon, fake, updates = _daemon(tmp_path, request=True, hold=hold)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not daemon.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert daemon.running == ["c1"]
        time.sleep(0.5)  # many ticks with the update due: it waits
        assert updates.installed == []
        hold.set()
        thread.join(WAIT)  # the update installed: the daemon leaves by itself
        assert not thread.is_alive()
    finally:
        hold.set()
        daemon.stop()
        thread.join(WAIT)
    assert daemon.restart is True
    # Installed with nothing running, after the backup completed.
    assert updates.installed == [([], ["completed"])]


def test_a_fresh_update_that_never_heartbeat_makes_the_daemon_restart(tmp_path: Path) -> None:
    daemon, _fake, updates = _daemon(tmp_path, request=False, hold=threading.Event())
    updates.rolled_back = True
    thread = threading.Thread(target=daemon.run)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert daemon.restart is True and updates.installed == []
