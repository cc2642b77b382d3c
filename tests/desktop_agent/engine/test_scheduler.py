"""The agent's scheduler, queue and runner with a controllable clock and a fake control plane.

Schedule maths (due, catch-up after sleep, a clock set back, pause), the queue (Back Up Now first,
retries waiting their turn), the runner against the in-memory BackApp of ``tests/support/fakes.py`` with the real
engine (trigger/attempt tags on ``backup/start``, retries with backoff, lease conflict, lease lost,
live progress), the socket client against a real WebSocket server on loopback, and the time zone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.sync.server import ServerConnection, serve

from desktop_agent.engine import (
    AgentDaemon,
    AgentSocket,
    BackupEngine,
    CancelToken,
    ConfigInfo,
    ControlPlane,
    Dispatcher,
    EngineOptions,
    Event,
    EventSink,
    HttpStorage,
    Job,
    RetrySettings,
    Runner,
    RunRequest,
    ScanStarted,
    Scheduler,
    ScheduleStore,
    local_timezone_name,
    websocket_url,
)
from desktop_agent.engine._scheduling import ProgressReporter
from tests.support.fakes import (
    API_KEY,
    Clock,
    LeasingBackApp,
    config,
    engine_factory,
    make_scheduler,
    plane_for,
)


def cfg(config_id: str, schedule: Any, *paths: str, **options: Any) -> ConfigInfo:
    raw = config(config_id, *(paths or ("/nowhere",)), schedule=schedule, **options)
    return msgspec.convert(raw, ConfigInfo)


# -- schedule maths ---------------------------------------------------------------------------------


def test_a_daily_schedule_fires_once_at_its_local_time_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path)
    s.set_configs([cfg("c1", {"preset": "daily", "at": "14:30", "cron": "30 14 * * *"})])
    assert s.tick().due == ()
    # 14:30 Paris is 13:30 UTC
    assert s.next_run("c1") == datetime(2025, 1, 6, 13, 30, tzinfo=UTC)
    clock.advance(hours=1, minutes=29, seconds=59)
    assert s.tick().due == ()
    clock.advance(seconds=2)
    [due] = s.tick().due
    assert due.config.id == "c1" and due.slot == datetime(2025, 1, 6, 13, 30, tzinfo=UTC)
    assert not due.catch_up
    assert s.tick().due == ()
    # Handed out but not run yet: an agent killed now runs the slot when it starts again.
    saved = json.loads((tmp_path / "agent" / "schedule.json").read_text())
    assert saved["configs"]["c1"]["lastRun"] is None
    killed = make_scheduler(clock, tmp_path)
    killed.set_configs([cfg("c1", {"preset": "daily", "at": "14:30", "cron": "30 14 * * *"})])
    [rerun] = killed.tick().due
    assert rerun.slot == due.slot
    # Once its job has ended, the slot is remembered across restarts.
    s.ran("c1", due.slot)
    saved = json.loads((tmp_path / "agent" / "schedule.json").read_text())
    assert saved["configs"]["c1"]["lastRun"] == "2025-01-06T13:30:00Z"

    # a restarted agent remembers the slot: no second run, the next one is tomorrow
    again = make_scheduler(clock, tmp_path)
    again.set_configs([cfg("c1", {"preset": "daily", "at": "14:30", "cron": "30 14 * * *"})])
    assert again.tick().due == ()
    assert again.next_run("c1") == datetime(2025, 1, 7, 13, 30, tzinfo=UTC)


def test_a_new_config_does_not_run_for_slots_before_it_was_seen(tmp_path: Path) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path)
    s.set_configs([cfg("c1", {"cron": "0 * * * *"})])  # 12:00 UTC is a slot, exactly now
    assert s.tick().due == ()
    clock.advance(minutes=59)
    assert s.tick().due == ()
    clock.advance(minutes=1)
    assert len(s.tick().due) == 1


def test_a_laptop_that_slept_through_slots_gets_one_catch_up_run(tmp_path: Path) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path)
    s.set_configs([cfg("c1", {"preset": "hourly", "minute": 0, "cron": "0 * * * *"})])
    clock.advance(hours=1)
    assert len(s.tick().due) == 1  # 13:00 UTC
    clock.advance(minutes=5)
    assert s.tick().jump == 0.0
    clock.sleep(hours=5, minutes=20)  # suspended: the monotonic clock stood still
    tick = s.tick()
    assert tick.jump == pytest.approx(5 * 3600 + 20 * 60)
    [due] = tick.due  # five missed slots, one run
    assert due.catch_up and due.slot == datetime(2025, 1, 6, 18, 0, tzinfo=UTC)
    assert s.tick().due == ()


def test_a_clock_set_back_is_noticed_and_schedules_count_from_the_new_time(
    tmp_path: Path,
) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path, tz=None)  # UTC
    s.set_configs([cfg("c1", {"cron": "*/10 * * * *"})])
    clock.advance(minutes=10)
    assert len(s.tick().due) == 1
    clock.wall -= timedelta(hours=2)  # someone set the clock back
    tick = s.tick()
    assert tick.jump == pytest.approx(-7200) and tick.due == ()
    assert s.last_run("c1") == clock.wall  # clamped: not two hours in the future
    clock.advance(minutes=10)
    assert len(s.tick().due) == 1  # runs again after one period, not after two hours


def test_a_changed_schedule_counts_from_the_change(tmp_path: Path) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path, tz=None)
    s.set_configs([cfg("c1", {"cron": "0 0 * * 0"})])  # weekly
    clock.advance(minutes=30)
    s.set_configs([cfg("c1", {"cron": "0 * * * *"})])  # now hourly: 12:00 passed before the change
    assert s.tick().due == ()
    clock.advance(minutes=30)
    assert len(s.tick().due) == 1


def test_a_bad_schedule_is_ignored_and_null_means_manual_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path)
    s.set_configs([cfg("bad", {"cron": "not a cron"}), cfg("manual", None)])
    assert s.scheduled == []
    assert "ignoring its schedule" in caplog.text
    clock.advance(days=3)
    assert s.tick().due == ()


def test_pause_holds_scheduled_runs_and_resume_catches_up_once(tmp_path: Path) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path, tz=None)
    s.set_configs([cfg("c1", {"cron": "*/5 * * * *"})])
    s.pause(until=clock.now() + timedelta(minutes=30))
    for _ in range(5):
        clock.advance(minutes=5)
        assert s.tick().due == ()
    assert s.paused
    s.resume()
    [due] = s.tick().due
    assert due.slot == datetime(2025, 1, 6, 12, 25, tzinfo=UTC)
    # a timed pause ends by itself
    s.pause(until=clock.now() + timedelta(minutes=7))
    clock.advance(minutes=5)
    assert s.tick().due == ()
    clock.advance(minutes=5)
    assert not s.paused and len(s.tick().due) == 1


# -- the queue ---------------------------------------------------------------------------------------


def test_the_queue_runs_requests_first_and_holds_automatic_jobs_while_paused(
    tmp_path: Path,
) -> None:
    clock = Clock()
    s = make_scheduler(clock, tmp_path, tz=None)
    d = Dispatcher(s, monotonic=clock.monotonic)
    d.set_configs([cfg("a", {"cron": "* * * * *"}), cfg("b", None)])
    clock.advance(minutes=1)
    d.poll()
    assert d.request(RunRequest(id="r1", config_id="b"))
    assert not d.request(RunRequest(id="r1", config_id="b"))  # the heartbeat repeats it: once
    picked = d.next_job()
    assert picked is not None and picked[0].trigger == "request" and picked[0].config_id == "b"
    assert d.next_job() is None  # one at a time
    from desktop_agent.engine import Outcome

    d.finished(Outcome(picked[0], "completed"))
    s.pause()
    assert d.next_job() is None and d.wake_in() is None  # the scheduled job is held
    assert d.request(RunRequest(id="r2", config_id="a"))  # ... but Back Up Now still works
    picked = d.next_job()
    assert picked is not None and picked[0].trigger == "request"
    d.finished(Outcome(picked[0], "completed"))
    # a scheduled run never replaces a pending request
    assert d.request(RunRequest(id="r3", config_id="a"))
    assert not d.add(Job("a", trigger="schedule"))


def test_a_retry_waits_for_its_time(tmp_path: Path) -> None:
    from desktop_agent.engine import Outcome

    clock = Clock()
    d = Dispatcher(make_scheduler(clock, tmp_path), monotonic=clock.monotonic)
    job = Job("a", trigger="schedule", max_attempts=3)
    d.add(job)
    picked = d.next_job()
    assert picked is not None
    retry = Job("a", trigger="retry", attempt=2, max_attempts=3, not_before=clock.mono + 60)
    d.finished(Outcome(job, "failed", retry=retry))
    assert d.next_job() is None and d.wake_in() == pytest.approx(60)
    clock.advance(seconds=60)
    picked = d.next_job()
    assert picked is not None and picked[0] == retry


def test_retry_settings_are_bounded_and_double_with_jitter() -> None:
    default = RetrySettings.from_options(None)
    assert (default.attempts, default.delay_seconds) == (3, 60.0)
    assert RetrySettings.from_options({"attempts": 99, "delaySeconds": 10**9}) == RetrySettings(
        10, 6 * 3600.0
    )
    assert RetrySettings.from_options({"attempts": "x", "delaySeconds": True}) == default
    r = RetrySettings(5, 60)
    assert [r.delay(n, lambda: 0.5) for n in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert r.delay(1, lambda: 0.0) == pytest.approx(54.0)
    assert r.delay(1, lambda: 0.999999) == pytest.approx(66.0, abs=0.01)
    assert RetrySettings(10, 3600).delay(9, lambda: 0.5) == 6 * 3600.0


# -- the runner, with the real engine against an in-memory server -----------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello " * 1000)
    return src


def test_a_scheduled_backup_takes_the_lease_tags_its_start_and_releases(
    tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path), monotonic=clock.monotonic)
    outcome = runner.run(
        Job("c1", trigger="schedule", max_attempts=3), None, CancelToken()
    )  # config fetched
    assert outcome.status == "completed" and outcome.retry is None
    assert outcome.result is not None and outcome.result.ok
    [start] = fake.starts
    assert (start["trigger"], start["attempt"], start["maxAttempts"]) == ("schedule", 1, 3)
    assert "runRequestId" not in start
    assert [c for c, _ in fake.lease_calls] == ["lease", "release"]
    assert fake.leases == {}
    [log] = fake.logs.values()
    assert log.status == "completed"


def test_a_requested_backup_carries_its_request_id(tmp_path: Path, source: Path) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    outcome = runner.run(Job("c1", trigger="request", run_request_id="rr-1"), None, CancelToken())
    assert outcome.status == "completed"
    assert fake.starts[0]["runRequestId"] == "rr-1" and fake.starts[0]["trigger"] == "request"


def test_a_failed_scheduled_backup_is_retried_with_backoff_each_attempt_in_the_history(
    tmp_path: Path,
) -> None:
    clock = Clock()
    missing = str(tmp_path / "not-there")
    fake = LeasingBackApp([config("c1", missing, retry={"attempts": 3, "delaySeconds": 60})], clock)
    runner = Runner(
        plane_for(fake),
        engine_factory(fake, tmp_path, clock),
        monotonic=clock.monotonic,
        rand=lambda: 0.5,
    )
    d = Dispatcher(make_scheduler(clock, tmp_path), monotonic=clock.monotonic)
    d.set_configs(plane_for(fake).list_configs())
    d.add(Job("c1", trigger="schedule", max_attempts=3))
    delays = []
    outcomes = []
    while True:
        picked = d.next_job()
        if picked is None:
            wait = d.wake_in()
            if wait is None:
                break
            delays.append(wait)
            clock.advance(seconds=wait)
            continue
        outcome = runner.run(picked[0], picked[1], CancelToken())
        outcomes.append(outcome)
        d.finished(outcome)
    assert [o.status for o in outcomes] == ["failed"] * 3
    assert delays == [60.0, 120.0]  # doubling; then no fourth attempt
    assert [(s["trigger"], s["attempt"], s["maxAttempts"]) for s in fake.starts] == [
        ("schedule", 1, 3),
        ("retry", 2, 3),
        ("retry", 3, 3),
    ]
    assert [lg.status for lg in fake.logs.values()] == ["failed"] * 3  # each attempt visible
    assert outcomes[-1].retry is None


def test_a_failed_requested_backup_is_not_retried(tmp_path: Path) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(tmp_path / "nope"))], clock)
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    outcome = runner.run(Job("c1", trigger="request", run_request_id="r"), None, CancelToken())
    assert outcome.status == "failed" and outcome.retry is None


def test_a_config_running_elsewhere_is_skipped_until_that_lease_expires(
    tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    # another machine took the lease and then crashed: it never renews nor releases
    fake.leases["c1"] = ("Office PC", "other", clock.now() + timedelta(seconds=300))
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    outcome = runner.run(Job("c1", trigger="schedule", max_attempts=3), None, CancelToken())
    assert outcome.status == "skipped" and outcome.retry is None
    assert "already running on Office PC" in (outcome.reason or "")
    assert "already running elsewhere" in caplog.text
    assert fake.starts == [] and fake.logs == {}
    clock.advance(seconds=301)  # the crashed holder's lease lapsed
    outcome = runner.run(Job("c1", trigger="schedule", max_attempts=3), None, CancelToken())
    assert outcome.status == "completed"


def test_the_lease_is_renewed_while_the_backup_runs_and_losing_it_stops_the_backup(
    tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    cancel = CancelToken()
    renewed = threading.Event()

    def slow_scan(event: Event) -> None:
        if isinstance(event, ScanStarted):
            assert renewed.wait(5)  # at least one renewal happened during the backup
            fake.renew_conflict = True  # someone else took over the lease
            assert cancel.wait(5)  # the keeper cancels the backup

    runner = Runner(
        plane_for(fake), engine_factory(fake, tmp_path), events=slow_scan, renew_every=0.05
    )
    real_renew = runner.plane.renew_lease

    def renew(config_id: str, token: str, ttl: int) -> Any:
        lease = real_renew(config_id, token, ttl)
        renewed.set()
        return lease

    runner.plane.renew_lease = renew  # type: ignore[method-assign,assignment]
    outcome = runner.run(Job("c1", trigger="schedule", max_attempts=3), None, cancel)
    assert outcome.status == "failed" and outcome.retry is None  # a lost lease is not retried
    assert "lease was lost" in (outcome.reason or "")
    [log] = fake.logs.values()
    assert log.status == "failed" and "lease was lost" in (log.error or "")
    assert runner.keeper is not None and runner.keeper.renewals >= 1


def test_an_unreachable_server_defers_the_job(tmp_path: Path, source: Path) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    fake.faults = lambda request: httpx.ConnectError("down", request=request)
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    outcome = runner.run(Job("c1", trigger="schedule", max_attempts=3), None, CancelToken())
    assert outcome.status == "deferred"
    d = Dispatcher(make_scheduler(clock, tmp_path), monotonic=clock.monotonic)
    d.add(outcome.job)
    assert d.next_job() is not None
    d.finished(outcome)
    assert d.next_job() is None and d.wake_in() == pytest.approx(30)


def test_progress_is_streamed_about_once_a_second_after_the_log_exists() -> None:
    sent: list[dict[str, Any]] = []
    log_id: list[str | None] = [None]
    reporter = ProgressReporter(sent.append, lambda: log_id[0], interval=0.2)
    try:
        from desktop_agent.engine import ArchiveProgress

        def progress(n: int) -> ArchiveProgress:
            return ArchiveProgress(
                config_id="c1",
                files_done=n,
                files_total=100,
                bytes_done=n * 10,
                bytes_total=1000,
                archive_bytes=n,
                rate=123.456,
                eta=4.2,
            )

        reporter(progress(1))
        time.sleep(0.3)
        assert sent == []  # no log yet
        log_id[0] = "log-1"
        deadline = time.monotonic() + 1.0
        n = 1
        while time.monotonic() < deadline:
            n += 1
            reporter(progress(n))
            time.sleep(0.005)
        time.sleep(0.3)
    finally:
        reporter.close()
    assert 3 <= len(sent) <= 8, len(sent)  # ~1 s / 0.2 s, not one per event (~150)
    assert sent[0]["logId"] == "log-1" and sent[0]["phase"] == "archiving"
    assert set(sent[-1]) == {
        "logId",
        "phase",
        "filesDone",
        "filesTotal",
        "bytesDone",
        "bytesTotal",
        "rate",
        "eta",
    }
    assert sent[-1]["filesDone"] == n and sent[-1]["rate"] == 123.5


def test_a_large_backup_posts_progress_while_it_uploads(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    import random

    (src / "blob").write_bytes(random.Random(1).randbytes(3 << 20))
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(src), compression=False)], clock)

    def make(plane: ControlPlane, events: EventSink) -> BackupEngine:
        from desktop_agent.engine import UploadOptions

        return BackupEngine(
            plane,
            HttpStorage(transport=fake.transport),
            EngineOptions(
                temp_dir=tmp_path / "t",
                upload=UploadOptions(multipart_threshold=256 << 10, part_size=256 << 10),
            ),
            events=events,
        )

    def slow_parts(request: httpx.Request) -> None:
        if request.url.path == "/api/agent/backup/upload/part":
            time.sleep(0.03)

    fake.faults = slow_parts
    runner = Runner(plane_for(fake), make, progress_interval=0.05)
    outcome = runner.run(Job("c1", trigger="request", run_request_id="r"), None, CancelToken())
    assert outcome.status == "completed"
    [log] = fake.logs.values()
    assert fake.progress, "no progress posted"
    assert all(p["logId"] == log.id for p in fake.progress)
    assert {p["phase"] for p in fake.progress} <= {"archiving", "uploading"}


# -- the headless loop, in-process -------------------------------------------------------------------


def test_the_daemon_sends_its_zone_and_runs_requests_from_the_heartbeat(
    tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    fake.run_requests = [{"id": "rr-9", "configId": "c1", "requestedAt": "2025-01-06T12:00:00Z"}]
    plane = plane_for(fake)
    scheduler = Scheduler(ScheduleStore(tmp_path / "agent"), "Europe/Paris")
    daemon = AgentDaemon(
        plane,
        Runner(plane, engine_factory(fake, tmp_path)),
        Dispatcher(scheduler),
        version="9.9",
        platform="linux",
        tick=0.05,
    )
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not daemon.outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.stop()
        thread.join(20)
    assert not thread.is_alive()
    assert fake.heartbeat_bodies[0]["timezone"] == "Europe/Paris"
    [outcome] = daemon.outcomes  # the repeated request in later heartbeats is not run twice
    assert outcome.status == "completed" and fake.starts[0]["runRequestId"] == "rr-9"


def test_stopping_the_daemon_cancels_the_running_backup_and_releases_the_lease(
    tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source))], clock)
    fake.run_requests = [{"id": "rr-1", "configId": "c1"}]
    fake.features = ["backup-cancelled"]
    plane = plane_for(fake)
    started = threading.Event()
    holder: list[AgentDaemon] = []

    def hold(event: Event) -> None:
        if isinstance(event, ScanStarted):
            started.set()
            deadline = time.monotonic() + 10
            while not holder[0].stopping and time.monotonic() < deadline:
                time.sleep(0.01)

    daemon = AgentDaemon(
        plane,
        Runner(plane, engine_factory(fake, tmp_path), events=hold),
        Dispatcher(Scheduler(None, None)),
        version="9.9",
        platform="linux",
        tick=0.05,
    )
    holder.append(daemon)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert started.wait(20)
    finally:
        daemon.stop("agent stopped")
        thread.join(20)
    assert not thread.is_alive()
    [outcome] = daemon.outcomes
    # Stopping the agent is someone's choice, not a failure of the backup.
    assert outcome.status == "cancelled" and outcome.reason == "agent stopped"
    # Stopped during the scan: nothing was uploaded and nothing failed, so no history line.
    assert fake.logs == {}
    assert fake.leases == {} and fake.lease_calls[-1] == ("release", "c1")


# -- the socket -------------------------------------------------------------------------------------


class WsServer:
    """A real WebSocket server on loopback that checks the key like ``GET /api/agent/ws``."""

    def __init__(self) -> None:
        self.pings = 0
        self.headers: list[str | None] = []
        self.connections: list[ServerConnection] = []
        self.received: list[dict[str, Any]] = []
        self.close_with: int | None = None
        """Accept, then close with this code (how the BackApp server refuses a key)."""
        self.server = serve(self.handler, "127.0.0.1", 0, process_request=self.check)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check(self, connection: ServerConnection, request: Any) -> Any:
        key = request.headers.get("X-Agent-API-Key")
        self.headers.append(key)
        if key != API_KEY and self.close_with is None:
            return connection.respond(401, "unauthorized\n")
        return None

    def handler(self, ws: ServerConnection) -> None:
        if self.close_with is not None:
            ws.send(json.dumps({"type": "error", "status": 401, "error": "unauthorized"}))
            ws.close(self.close_with, "unauthorized")
            return
        self.connections.append(ws)
        ws.send(json.dumps({"type": "hello", "agent": {"id": "a1", "name": "Laptop"}}))
        for raw in ws:
            message = json.loads(raw)
            self.received.append(message)
            if message.get("type") == "ping":
                self.pings += 1
                ws.send(json.dumps({"type": "pong"}))

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def ws_server() -> Iterator[WsServer]:
    server = WsServer()
    yield server
    server.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_socket_delivers_run_messages_pings_and_reconnects(ws_server: WsServer) -> None:
    runs: list[RunRequest] = []
    states: list[bool] = []
    sock = AgentSocket(
        f"http://127.0.0.1:{ws_server.port}",
        API_KEY,
        on_run=runs.append,
        on_state=states.append,
        ping_interval=0.2,
        min_backoff=0.05,
        max_backoff=0.2,
    )
    sock.start()
    try:
        wait_for(lambda: sock.connected and sock.agent is not None)
        assert sock.agent is not None and sock.agent.name == "Laptop"
        assert ws_server.headers == [API_KEY]
        server_side = ws_server.connections[0]
        server_side.send(json.dumps({"type": "run", "runRequestId": "r1", "configId": "c1"}))
        server_side.send("not json")
        server_side.send(json.dumps({"type": "run", "configId": 5}))  # malformed: ignored
        wait_for(lambda: runs)
        assert runs == [RunRequest(id="r1", config_id="c1")]
        wait_for(lambda: ws_server.pings >= 1)  # idle: the agent pings
        assert sock.send({"type": "progress", "logId": "l1", "phase": "archiving"})
        wait_for(lambda: any(m.get("type") == "progress" for m in ws_server.received))
        server_side.close()  # the server goes away: the agent reconnects by itself
        wait_for(lambda: sock.connects >= 2 and sock.connected)
        assert states[:3] == [True, False, True]
    finally:
        sock.stop()
    assert not sock.connected and not sock.send({"type": "ping"})


@pytest.mark.parametrize("refusal", ["http-401", "close-4401"])
def test_the_socket_with_a_wrong_key_keeps_backing_off(ws_server: WsServer, refusal: str) -> None:
    if refusal == "close-4401":
        ws_server.close_with = 4401
    sock = AgentSocket(
        f"http://127.0.0.1:{ws_server.port}",
        "bka_wrong",
        on_run=lambda r: None,
        min_backoff=0.01,
        max_backoff=0.5,
    )
    sock.start()
    try:
        time.sleep(1.0)
    finally:
        sock.stop()
    assert sock.connects == (0 if refusal == "http-401" else len(ws_server.headers))
    assert 1 <= len(ws_server.headers) <= 6  # backed off to the longest delay, not hammering


def test_websocket_url() -> None:
    assert websocket_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/api/agent/ws"
    assert websocket_url("https://b.example/sub/") == "wss://b.example/sub/api/agent/ws"


# -- the API client's extensions ---------------------------------------------------------------------


def test_client_heartbeat_sends_the_zone_and_reads_run_requests(tmp_path: Path) -> None:
    clock = Clock()
    fake = LeasingBackApp([], clock)
    fake.run_requests = [{"id": "r1", "configId": "c1", "requestedAt": "2025-01-06T12:00:00Z"}]
    with plane_for(fake) as client:
        beat = client.heartbeat(version="1", platform="linux", timezone="Asia/Tokyo")
        plain = client.heartbeat(version="1", platform="linux")
    assert fake.heartbeat_bodies[0]["timezone"] == "Asia/Tokyo"
    assert "timezone" not in fake.heartbeat_bodies[1]
    assert beat.run_requests == [RunRequest("r1", "c1", "2025-01-06T12:00:00Z")]
    assert plain.poll_interval == 30
    # a zone the server does not know must not cost the heartbeat
    with plane_for(fake) as client:
        assert client.heartbeat(version="1", platform="linux", timezone="Mars/Olympus").run_requests
    assert [b.get("timezone") for b in fake.heartbeat_bodies[2:]] == ["Mars/Olympus", None]


def test_client_leases(tmp_path: Path) -> None:
    from desktop_agent.engine import ConflictError

    clock = Clock()
    fake = LeasingBackApp([], clock)
    with plane_for(fake) as client:
        lease = client.acquire_lease("c1", 60)
        assert lease.token == "t1" and lease.expires_at == "2025-01-06T12:01:00Z"
        assert client.renew_lease("c1", lease.token, 120).expires_at == "2025-01-06T12:02:00Z"
        fake.holder = "Other"
        with pytest.raises(ConflictError, match="already running on this agent"):
            client.acquire_lease("c1", 60)
        fake.holder = "this agent"
        client.release_lease("c1", lease.token)
        client.send_progress({"logId": "l", "phase": "scanning"})
    assert fake.leases == {} and fake.progress == [{"logId": "l", "phase": "scanning"}]


# -- the time zone -----------------------------------------------------------------------------------


def test_local_timezone_name(tmp_path: Path) -> None:
    nowhere = tmp_path / "none"
    assert local_timezone_name({"TZ": "Europe/Paris"}) == "Europe/Paris"
    assert local_timezone_name({"TZ": ":America/New_York"}) == "America/New_York"
    assert local_timezone_name({"TZ": "CET-1CEST"}, nowhere, nowhere) is None  # POSIX rule
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Asia/Tokyo")
    assert local_timezone_name({}, link, nowhere) == "Asia/Tokyo"
    debian = tmp_path / "timezone"
    debian.write_text("Europe/Berlin\n")
    assert local_timezone_name({}, nowhere, debian) == "Europe/Berlin"
    assert local_timezone_name({}, nowhere, nowhere) is None


def test_the_daemon_prints_one_line_per_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    from desktop_agent.cli.display import daemon_display
    from desktop_agent.engine import BackupFailed, BackupFinished

    show = daemon_display(False)
    show(ScanStarted(config_id="c1", sources=("/x",)))
    show(
        BackupFinished(
            config_id="c1",
            config_name="Docs",
            log_id="l1",
            filename="backup-x.tar.gz",
            files=3,
            bytes=10,
            archive_size=2048,
            sha256="0" * 64,
            duration_ms=5,
            rate=1.0,
            errors=0,
        )
    )
    show(BackupFailed(config_id="c2", config_name="", log_id=None, reason="boom", duration_ms=1))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("completed 'Docs': backup-x.tar.gz (3 files, 2.0 KiB)")
    assert lines[1].endswith("FAILED 'c2': boom")
