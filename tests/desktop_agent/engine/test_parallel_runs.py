"""Backups in parallel (``parallelBackups``): the queue hands out up to N jobs of different configs,
never two of one config; the daemon runs them at the same time, each under its own lease, and
stops one without the others. Against the in-memory BackApp of ``tests/support/fakes.py`` with the
real engine; the end-to-end test runs it against the real server and S3."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from desktop_agent.engine import (
    AgentDaemon,
    AgentSettings,
    ConfigurationError,
    Dispatcher,
    Event,
    Job,
    Outcome,
    Runner,
    ScanStarted,
    Scheduler,
    load_settings,
    parallel_backups,
)
from tests.support.fakes import Clock, LeasingBackApp, config, engine_factory, plane_for

WAIT = 30.0


def test_the_queue_hands_out_up_to_n_jobs_never_two_of_one_config() -> None:
    d = Dispatcher(Scheduler(None, None), parallel=2)
    for config_id in ("a", "b", "c"):
        d.add(Job(config_id))
    first, second = d.next_job(), d.next_job()
    assert first is not None and second is not None
    assert d.next_job() is None  # two at a time
    assert [j.config_id for j in d.running] == [first[0].config_id, second[0].config_id]
    d.finished(Outcome(first[0], "completed"))
    d.add(Job(second[0].config_id, trigger="request", run_request_id="r1"))
    third = d.next_job()
    # The request for the running config waits (a request goes first otherwise); c runs.
    assert third is not None and third[0].config_id not in (second[0].config_id,)
    assert d.next_job() is None and d.wake_in() is None  # b's request waits for b, not a time
    d.finished(Outcome(second[0], "completed"))
    again = d.next_job()
    assert again is not None and again[0].config_id == second[0].config_id
    assert again[0].trigger == "request"


def test_one_at_a_time_stays_the_default() -> None:
    d = Dispatcher(Scheduler(None, None))
    d.add(Job("a"))
    d.add(Job("b"))
    assert d.next_job() is not None and d.next_job() is None


def _sources(tmp_path: Path, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        src = tmp_path / name
        src.mkdir()
        (src / "a.txt").write_text(name * 5000)
        out.append(str(src))
    return out


def _daemon(
    tmp_path: Path, names: tuple[str, ...], parallel: int, hold: threading.Event
) -> tuple[AgentDaemon, LeasingBackApp, dict[str, float]]:
    fake = LeasingBackApp(
        [config(n, src) for n, src in zip(names, _sources(tmp_path, names), strict=True)], Clock()
    )
    fake.run_requests = [{"id": f"rr-{n}", "configId": n} for n in names]
    fake.features = ["backup-cancelled"]
    scanning: dict[str, float] = {}

    def events(event: Event) -> None:
        if isinstance(event, ScanStarted):
            scanning[event.config_id] = time.monotonic()
            hold.wait(WAIT)

    plane = plane_for(fake)
    daemon = AgentDaemon(
        plane,
        Runner(plane, engine_factory(fake, tmp_path), events=events),
        Dispatcher(Scheduler(None, None), parallel=parallel),
        version="9.9",
        platform="linux",
        tick=0.05,
    )
    return daemon, fake, scanning


def _wait(predicate: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)
    assert predicate(), "timed out"  # type: ignore[operator]


def test_the_daemon_runs_two_configs_at_once_each_under_its_own_lease(tmp_path: Path) -> None:
    hold = threading.Event()
    daemon, fake, scanning = _daemon(tmp_path, ("c1", "c2", "c3"), 2, hold)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        _wait(lambda: len(scanning) == 2)  # two are in their scan at the same moment
        assert len(daemon.running) == 2 and len(fake.leases) == 2
        time.sleep(0.3)
        assert len(scanning) == 2  # and no third
        hold.set()
        _wait(lambda: len(daemon.outcomes) == 3)
    finally:
        hold.set()
        daemon.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert sorted(o.job.config_id for o in daemon.outcomes) == ["c1", "c2", "c3"]
    assert all(o.status == "completed" for o in daemon.outcomes)
    leased = [c for call, c in fake.lease_calls if call == "lease"]
    released = [c for call, c in fake.lease_calls if call == "release"]
    assert sorted(leased) == sorted(released) == ["c1", "c2", "c3"]
    assert fake.leases == {}
    assert sorted(log.status for log in fake.logs.values()) == ["completed"] * 3


def test_cancelling_one_parallel_backup_leaves_the_other_running(tmp_path: Path) -> None:
    hold = threading.Event()
    daemon, fake, scanning = _daemon(tmp_path, ("c1", "c2"), 2, hold)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        _wait(lambda: len(scanning) == 2)
        assert daemon.cancel("c1")
        assert not daemon.cancel("nope")
        hold.set()
        _wait(lambda: len(daemon.outcomes) == 2)
    finally:
        hold.set()
        daemon.stop()
        thread.join(WAIT)
    by_config = {o.job.config_id: o for o in daemon.outcomes}
    assert by_config["c1"].status == "cancelled" and by_config["c2"].status == "completed"
    assert fake.leases == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "parallelBackups must be between 1 and 4, not 0"),
        (5, "parallelBackups must be between 1 and 4, not 5"),
        ("two", "bad value for parallelBackups"),
        (2.5, "bad value for parallelBackups"),
        (True, "bad value for parallelBackups"),
    ],
)
def test_bad_parallel_backups_are_refused_in_words(
    tmp_path: Path, value: object, message: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"parallelBackups": value}))
    with pytest.raises(ConfigurationError, match=message):
        load_settings({"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)})


def test_parallel_backups_from_the_file_and_the_environment(tmp_path: Path) -> None:
    env = {"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)}
    assert load_settings(env).parallel_backups == AgentSettings().parallel_backups == 1
    (tmp_path / "config.json").write_text(json.dumps({"parallelBackups": 3}))
    assert load_settings(env).parallel_backups == 3
    assert load_settings({**env, "BACKAPP_AGENT_PARALLEL_BACKUPS": "2"}).parallel_backups == 2
    with pytest.raises(ConfigurationError, match="environment: bad value for parallelBackups"):
        load_settings({**env, "BACKAPP_AGENT_PARALLEL_BACKUPS": "many"})


def test_the_web_consoles_parallel_backups_replace_the_machines_own(tmp_path: Path) -> None:
    hold = threading.Event()
    daemon, fake, scanning = _daemon(tmp_path, ("c1", "c2", "c3"), 1, hold)
    fake.beat_extra = {"parallelBackups": 2}  # the agent page's setting, in the heartbeat
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        _wait(lambda: len(scanning) == 2)  # two at once, though the machine says one
        assert daemon.dispatcher.parallel == 2 and daemon.local_parallel == 1
        fake.beat_extra = {"parallelBackups": None}  # cleared on the page: the machine's own
        daemon.beat()
        assert daemon.dispatcher.parallel == 1
        hold.set()
        _wait(lambda: len(daemon.outcomes) == 3)
    finally:
        hold.set()
        daemon.stop()
        thread.join(WAIT)
    assert all(o.status == "completed" for o in daemon.outcomes)


def test_a_parallel_backups_value_the_agent_cannot_use_is_ignored_in_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert parallel_backups(None, 2) == 2
    assert parallel_backups(3, 1) == 3 and parallel_backups(4, 1) == 4
    for bad in (0, 5, -1, "2", True, 2.5, {"n": 2}):
        caplog.clear()
        assert parallel_backups(bad, 1) == 1, bad
        assert "parallel backups; keeping 1 (1-4 are possible)" in caplog.text, bad
