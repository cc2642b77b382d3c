"""Bandwidth limits on the agent: the shared rules (``bandwidth``), the control that applies them to
the process's buckets (fake clock, fake probe), the OS probes (recorded outputs, a fake sysfs),
and pauses in the throttle."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from desktop_agent.engine._transport.bandwidth import BandwidthControl, apply_limits
from desktop_agent.engine._transport.power import (
    LinuxProbe,
    MacProbe,
    WindowsProbe,
    nm_metered,
    pmset_on_battery,
)
from desktop_agent.engine._transport.throttle import MBIT, Throttle
from desktop_agent.engine.bandwidth import BandwidthLimits, LimitsError, Rates, lowest
from desktop_agent.engine.protocol import Heartbeat

WORKDAY = {"schedule": [{"days": "weekdays", "from": "09:00", "to": "18:00", "upload": 10}]}
MONDAY_NOON = datetime(2026, 11, 30, 12, 0)
MONDAY_NIGHT = datetime(2026, 11, 30, 22, 0)
SATURDAY_NOON = datetime(2026, 12, 5, 12, 0)


def limits(raw: Any) -> BandwidthLimits:
    parsed = BandwidthLimits.parse(raw)
    assert parsed is not None
    return parsed


# --- the rules -----------------------------------------------------------------------------


def test_ten_mbit_on_weekdays_unlimited_otherwise() -> None:
    rule = limits(WORKDAY)
    assert rule.rates(MONDAY_NOON) == Rates(10, None)
    assert rule.rates(MONDAY_NIGHT) == Rates()
    assert rule.rates(SATURDAY_NOON) == Rates()
    assert rule.to_json()["schedule"][0]["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert limits(rule.to_json()) == rule  # the stored form reads back the same


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    rule = limits({"schedule": [{"days": "fri", "from": "22:00", "to": "06:00", "upload": 1}]})
    assert rule.rates(datetime(2026, 12, 4, 23, 0)) == Rates(1, None)  # Friday night
    assert rule.rates(datetime(2026, 12, 5, 5, 59)) == Rates(1, None)  # Saturday early
    assert rule.rates(datetime(2026, 12, 5, 6, 0)) == Rates()
    assert rule.rates(datetime(2026, 12, 4, 5, 0)) == Rates()  # Friday early: Thursday's


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"upload": 0}, "limits.upload: a limit must be more than 0"),
        ({"download": -2}, "limits.download: a limit must be more than 0"),
        ({"upload": "10"}, "a number of Mbit/s"),
        ({"upload": True}, "a number of Mbit/s"),
        ({"upload": 1e9}, "at most"),
        ({"schedule": [{"days": "mon", "from": "9:00", "to": "9:00"}]}, "the same time"),
        ({"schedule": [{"days": "mon", "from": "25:00", "to": "26:00"}]}, "HH:MM"),
        ({"schedule": [{"days": "funday", "from": "09:00", "to": "10:00"}]}, "not a day"),
        ({"schedule": [{"days": "mon", "from": "09:00"}]}, "both from and to"),
        ({"schedule": {"days": "mon"}}, "a list of windows"),
        ({"pauseOnBattery": "yes"}, "true or false"),
        ({"limit": 3}, "unknown field"),
        ([], "an object"),
    ],
)
def test_bad_limits_are_refused_in_words(raw: Any, words: str) -> None:
    with pytest.raises(LimitsError, match=words):
        BandwidthLimits.parse(raw)


def test_the_lower_limit_wins() -> None:
    assert lowest(Rates(10, None), Rates(None, 5), Rates(20, 50)) == Rates(10, 5)
    assert lowest() == Rates()


# --- the control ---------------------------------------------------------------------------


class Probe:
    def __init__(self) -> None:
        self.metered_now: bool | None = None
        self.battery_now: bool | None = None

    def metered(self) -> bool | None:
        return self.metered_now

    def on_battery(self) -> bool | None:
        return self.battery_now


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def control(clock: Clock, probe: Probe | None = None) -> BandwidthControl:
    return BandwidthControl(probe=probe or Probe(), now=clock, interval=3600)


def test_the_schedule_is_followed_as_the_clock_moves() -> None:
    clock = Clock(MONDAY_NOON)
    bw = control(clock)
    bw.set_server(limits(WORKDAY))
    assert bw.upload.mbps == 10 and bw.upload_text() == "limited to 10 Mbit/s"
    clock.now = MONDAY_NIGHT
    bw.refresh()
    assert bw.upload.rate is None and bw.upload_text() is None


def test_a_local_setting_lower_than_the_servers_wins_and_a_higher_one_does_not() -> None:
    bw = control(Clock(MONDAY_NOON))
    bw.set_server(limits({"upload": 10, "download": 40}))
    bw.set_local(5, 100)
    assert (bw.upload.mbps, bw.download.mbps) == (5, 40)
    bw.set_server(None)
    assert (bw.upload.mbps, bw.download.mbps) == (5, 100)


def test_a_configs_own_limits_replace_the_agents_while_it_runs() -> None:
    bw = control(Clock(MONDAY_NOON))
    bw.set_server(limits({"upload": 10}))
    with bw.running("nas", limits({"upload": 80}), lambda: False):
        assert bw.upload.mbps == 80
        with bw.running("laptop", None, lambda: False):  # two at once: one bucket, the lowest
            assert bw.upload.mbps == 10
        # a heartbeat during the run changes the config's own limit
        bw.set_server(limits({"upload": 10}), {"nas": limits({"upload": 30})})
        assert bw.upload.mbps == 30
    assert bw.upload.mbps == 10


def test_a_heartbeat_brings_limits_and_bad_ones_change_nothing() -> None:
    bw = control(Clock(MONDAY_NOON))
    apply_limits(Heartbeat(limits={"upload": 12}, config_limits={}), bw)
    assert bw.upload.mbps == 12
    apply_limits(Heartbeat(limits={"upload": -1}), bw)
    assert bw.upload.mbps == 12
    apply_limits(Heartbeat(), bw)  # a server without limits: none
    assert bw.upload.rate is None


def test_backups_pause_on_battery_and_metered_connections_only_when_asked() -> None:
    probe = Probe()
    probe.battery_now = True
    bw = control(Clock(MONDAY_NOON), probe)
    bw.set_server(limits({"upload": 10, "pauseOnMetered": True}))
    with bw.running("c", None, lambda: False):
        assert bw.upload.paused is None  # on battery, but only metered pauses
        probe.metered_now = True
        bw.refresh()
        assert bw.upload_text() == "paused: on a metered connection"
        probe.metered_now = None  # the OS cannot tell: no pause
        bw.refresh()
        assert bw.upload.paused is None
    bw.set_server(limits({"pauseOnBattery": True}))
    assert bw.upload.paused is None  # nothing runs: a restore is never paused
    with bw.running("c", None, lambda: False):
        assert bw.upload_text() == "paused: on battery power"
        probe.battery_now = False
        bw.refresh()
        assert bw.upload_text() is None


def test_the_ticker_applies_a_window_without_a_heartbeat() -> None:
    clock = Clock(MONDAY_NIGHT)
    bw = BandwidthControl(probe=Probe(), now=clock, interval=0.05)
    try:
        bw.set_server(limits(WORKDAY))
        assert bw.upload.rate is None
        clock.now = MONDAY_NOON
        deadline = time.monotonic() + 5
        while bw.upload.mbps != 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        bw.close()


# --- pauses in the throttle ------------------------------------------------------------------


def test_a_paused_throttle_holds_requests_until_resumed_or_released() -> None:
    bucket = Throttle(None)
    bucket.pause("on battery power")
    passed = threading.Event()
    worker = threading.Thread(target=lambda: (bucket.wait_ready(poll=0.01), passed.set()))
    worker.start()
    assert not passed.wait(0.2)
    bucket.resume()
    assert passed.wait(5)
    worker.join()
    bucket.pause("on battery power")
    cancelled = threading.Event()
    cancelled.set()
    bucket.wait_ready(cancelled.is_set, poll=0.01)  # a cancelled backup is let go at once


def test_an_unlimited_throttle_never_waits_and_can_be_limited_later() -> None:
    slept: list[float] = []
    bucket = Throttle(None, sleep=slept.append)
    for _ in range(100):
        bucket.take(1_000_000)
    assert slept == [] and bucket.mbps is None
    bucket.set_rate(8 * MBIT)
    assert bucket.mbps == 8


# --- the OS probes -------------------------------------------------------------------------


def test_networkmanagers_metered_property() -> None:
    assert nm_metered("u 1\n") is True
    assert nm_metered("u 3\n") is True  # guessed yes (a phone's hotspot)
    assert nm_metered("u 4\n") is False
    assert nm_metered("   variant       uint32 2\n") is False
    assert nm_metered("u 0\n") is None
    assert nm_metered("") is None
    calls: list[list[str]] = []

    def run(argv: Any) -> str | None:
        calls.append(list(argv))
        return None if argv[0] == "busctl" else "method return\n   variant       uint32 1\n"

    assert LinuxProbe(run=run).metered() is True
    assert [c[0] for c in calls] == ["busctl", "dbus-send"]
    assert LinuxProbe(run=lambda argv: None).metered() is None  # no NetworkManager


def supply(root: Path, name: str, **files: str) -> None:
    (root / name).mkdir(parents=True)
    for key, value in files.items():
        (root / name / key).write_text(value + "\n")


def test_battery_from_sysfs(tmp_path: Path) -> None:
    laptop = tmp_path / "laptop"
    supply(laptop, "AC", type="Mains", online="0")
    supply(laptop, "BAT0", type="Battery", status="Discharging")
    supply(laptop, "hidpp_battery_0", type="Battery", scope="Device", status="Charging")
    assert LinuxProbe(sysfs=laptop).on_battery() is True
    (laptop / "AC" / "online").write_text("1\n")
    assert LinuxProbe(sysfs=laptop).on_battery() is False
    server = tmp_path / "server"
    server.mkdir()
    assert LinuxProbe(sysfs=server).on_battery() is None
    assert LinuxProbe(sysfs=tmp_path / "missing").on_battery() is None


def test_macos_and_windows_battery() -> None:
    on_battery = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=123)\t81%; discharging"
    assert pmset_on_battery(on_battery) is True
    assert pmset_on_battery("Now drawing from 'AC Power'\n") is False
    assert MacProbe(run=lambda argv: on_battery).on_battery() is True
    assert MacProbe(run=lambda argv: on_battery).metered() is None  # cannot tell
    assert WindowsProbe(status=lambda: 0).on_battery() is True
    assert WindowsProbe(status=lambda: 1).on_battery() is False
    assert WindowsProbe(status=lambda: 255).on_battery() is None
    assert WindowsProbe(status=lambda: None).metered() is None


# --- the limit in progress -------------------------------------------------------------------


def test_progress_says_the_limit_and_a_pause_that_begins_while_nothing_moves() -> None:
    from desktop_agent.engine._events import UploadProgress
    from desktop_agent.engine._scheduling.progress import ProgressReporter

    probe = Probe()
    bw = control(Clock(MONDAY_NOON), probe)
    bw.set_server(limits({"upload": 10, "pauseOnBattery": True}))
    sent: list[dict[str, Any]] = []
    with bw.running("c1", None, lambda: False):
        reporter = ProgressReporter(
            sent.append, lambda: "log-1", interval=0.05, limit_text=bw.upload_text
        )
        try:
            reporter(UploadProgress(config_id="c1", bytes_uploaded=10, parts_done=1, rate=1.0))
            deadline = time.monotonic() + 5
            while not sent and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sent[-1]["limit"] == "limited to 10 Mbit/s"
            probe.battery_now = True  # unplugged: no event follows, the upload just waits
            bw.refresh()
            while sent[-1].get("limit") != "paused: on battery power":
                assert time.monotonic() < deadline, sent
                time.sleep(0.02)
        finally:
            reporter.close()


def test_every_client_of_the_process_shares_one_bucket_per_direction() -> None:
    from desktop_agent.engine._settings import AgentSettings
    from desktop_agent.engine._transport.bandwidth import agent_bandwidth, reset_agent_bandwidth
    from desktop_agent.engine._transport.storage import HttpStorage

    reset_agent_bandwidth()
    try:
        settings = AgentSettings(limit_upload=6, limit_download=3)
        restore_limit = agent_bandwidth(settings).download  # what restores take
        with (
            HttpStorage.for_settings(settings, user_agent="t") as a,
            HttpStorage.for_settings(settings, user_agent="t") as b,
        ):
            assert a.upload_limit is b.upload_limit is agent_bandwidth().upload
            assert a.download_limit is restore_limit and restore_limit.mbps == 3
            apply_limits(Heartbeat(limits={"upload": 2, "download": 10}))
            assert a.upload_limit is not None and a.upload_limit.mbps == 2  # the server's, lower
            assert restore_limit.mbps == 3  # the machine's, lower
    finally:
        reset_agent_bandwidth()
