"""When the daemon runs restore drills: ``DrillSchedule`` with a controllable clock (due at once,
then a period after a drill ran, an hour after one that could not run, remembered across
restarts), and ``AgentDaemon`` running a due drill while no backup waits."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from desktop_agent.engine import (
    AgentDaemon,
    ConfigInfo,
    Dispatcher,
    DrillSchedule,
    Runner,
    Scheduler,
)
from tests.support.fakes import Clock, LeasingBackApp, config, engine_factory, plane_for


def cfg(config_id: str, **options: Any) -> ConfigInfo:
    return msgspec.convert(config(config_id, "/nowhere", **options), ConfigInfo)


WEEKLY = {"type": "incremental", "drill": {"every": "weekly", "sample": 3}}


def test_a_drill_is_due_at_once_then_a_period_after_it_ran(tmp_path: Path) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    schedule = DrillSchedule(tmp_path, now=lambda: now[0])
    plain = cfg("plain", type="incremental")
    full = cfg("full", drill={"every": "daily", "sample": 3})  # refused by the server anyway
    bad = cfg("bad", type="incremental", drill={"every": "hourly"})
    drilled = cfg("drilled", **WEEKLY)
    assert schedule.due([plain, full, bad]) is None
    assert schedule.due([plain, drilled]) == drilled

    schedule.done(drilled, ran=True)
    assert schedule.due([drilled]) is None
    now[0] += timedelta(days=6, hours=23)
    assert schedule.due([drilled]) is None
    now[0] += timedelta(hours=1)
    assert schedule.due([drilled]) == drilled

    # A drill that could not run (no snapshot yet, server away) is tried again in an hour.
    schedule.done(drilled, ran=False)
    now[0] += timedelta(minutes=59)
    assert schedule.due([drilled]) is None
    now[0] += timedelta(minutes=1)
    assert schedule.due([drilled]) == drilled

    # Remembered across restarts.
    schedule.done(drilled, ran=True)
    again = DrillSchedule(tmp_path, now=lambda: now[0])
    assert again.due([drilled]) is None
    now[0] += timedelta(days=7)
    assert again.due([drilled]) == drilled


def test_a_damaged_record_means_due(tmp_path: Path) -> None:
    (tmp_path / "drills.json").write_text("{not json")
    assert DrillSchedule(tmp_path).due([cfg("d", **WEEKLY)]) is not None


class RecordingDrills:
    def __init__(self, schedule: DrillSchedule) -> None:
        self.schedule = schedule
        self.ran: list[str] = []

    def due(self, configs: Any) -> ConfigInfo | None:
        return self.schedule.due(configs)

    def run(self, config: ConfigInfo) -> None:
        self.ran.append(config.id)
        self.schedule.done(config, ran=True)


def test_the_daemon_runs_a_due_drill_once(tmp_path: Path) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", "/nowhere", **WEEKLY)], clock)
    plane = plane_for(fake)
    drills = RecordingDrills(DrillSchedule(tmp_path))
    daemon = AgentDaemon(
        plane,
        Runner(plane, engine_factory(fake, tmp_path)),
        Dispatcher(Scheduler(None, None)),
        version="9.9",
        platform="linux",
        tick=0.05,
        drills=drills,
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not drills.ran and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few more ticks: the drill is not run again
    finally:
        daemon.stop()
        thread.join(20)
    assert not thread.is_alive()
    assert drills.ran == ["c1"]
    assert daemon.outcomes == type(daemon.outcomes)()  # no backup ran
