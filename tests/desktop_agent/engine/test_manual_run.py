"""``Runner.run_manual`` (``backapp-agent run`` and the tray's Back Up Now) against the in-memory
BackApp with leases (``test_scheduler.LeasingBackApp``) and the real engine: every config through
its lease, one held elsewhere skipped and reported, and the progress gathered before the log
existed sent the moment the server opens it (before the first byte is uploaded)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from desktop_agent.engine import (
    ApiClient,
    BackupEngine,
    CancelToken,
    ControlPlane,
    EngineOptions,
    Event,
    EventSink,
    HttpStorage,
    RunFinished,
    Runner,
    UploadOptions,
)
from desktop_agent.engine._scheduling import ManualRun, ProgressReporter
from tests.support.fakes import Clock, LeasingBackApp, config, engine_factory, plane_for

MIB = 1 << 20


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello " * 1000)
    return src


def test_a_manual_run_takes_each_lease_tags_manual_and_releases(
    tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source)), config("c2", str(source))], clock)
    events: list[Event] = []
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path), events=events.append)
    result = runner.run_manual()
    assert isinstance(result, ManualRun) and result.ok, result
    assert [r.config_id for r in result.results] == ["c1", "c2"] and result.skipped == ()
    assert [(s["configId"], s["trigger"], s["attempt"]) for s in fake.starts] == [
        ("c1", "manual", 1),
        ("c2", "manual", 1),
    ]
    assert fake.lease_calls == [
        ("lease", "c1"),
        ("release", "c1"),
        ("lease", "c2"),
        ("release", "c2"),
    ]
    assert fake.leases == {}
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert fake.heartbeats == 2  # before and after, as ``BackupEngine.run``


def test_a_config_whose_lease_is_held_elsewhere_is_skipped_and_the_others_run(
    tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(source)), config("c2", str(source))], clock)
    fake.leases["c1"] = ("Office PC", "other", clock.now() + timedelta(seconds=300))
    events: list[Event] = []
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path), events=events.append)
    result = runner.run_manual()
    assert not result.ok and result.error is None
    [skip] = result.skipped
    assert skip.config_id == "c1"
    assert skip.reason.startswith("config is already running on Office PC until ")
    # nothing was started for it: no log on the server, no result to record locally
    assert [s["configId"] for s in fake.starts] == ["c2"]
    assert [r.config_id for r in result.results] == ["c2"] and result.results[0].ok
    assert fake.leases["c1"][0] == "Office PC"  # left alone
    finished = events[-1]
    assert isinstance(finished, RunFinished) and (finished.completed, finished.failed) == (1, 0)

    # once the other machine is done (its lease released or lapsed), the same run backs it up
    del fake.leases["c1"]
    again = runner.run_manual(["c1"])
    assert again.ok and [r.config_id for r in again.results] == ["c1"]


def test_only_the_selected_configs_and_an_unknown_one_fails(tmp_path: Path, source: Path) -> None:
    fake = LeasingBackApp([config("c1", str(source)), config("c2", str(source))], Clock())
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    result = runner.run_manual(["c2", "nope"])
    assert {r.config_id: r.status for r in result.results} == {"nope": "failed", "c2": "completed"}
    assert [s["configId"] for s in fake.starts] == ["c2"]


def test_a_cancelled_run_starts_nothing(tmp_path: Path, source: Path) -> None:
    fake = LeasingBackApp([config("c1", str(source))], Clock())
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    cancel = CancelToken()
    cancel.cancel("cancelled by the user")
    result = runner.run_manual(cancel=cancel)
    [failed] = result.results
    assert failed.error == "cancelled by the user before it started"
    assert fake.starts == [] and fake.lease_calls == []


def test_the_run_cannot_start_when_the_server_refuses(tmp_path: Path, source: Path) -> None:
    fake = LeasingBackApp([config("c1", str(source))], Clock())
    plane = ApiClient("https://backapp.test", "bka_wrong", transport=fake.transport)
    events: list[Event] = []
    runner = Runner(plane, engine_factory(fake, tmp_path), events=events.append)
    result = runner.run_manual()
    assert result.error and "API key" in result.error
    assert not result.ok and result.results == () and fake.lease_calls == []
    assert [e.kind for e in events] == ["run_finished"]


# -- progress before the log exists ------------------------------------------------------------------


class OrderedBackApp(LeasingBackApp):
    """Keeps every request the agent made, in order (``LeasingBackApp`` answers the progress
    posts itself, before ``FakeBackApp`` records requests)."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__(configs, Clock())
        self.seen: list[tuple[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.seen.append((request.method, request.url.path))
        return super().handle(request)

    def order(self) -> list[str]:
        """The requests that matter here: ``start``, ``progress``, ``part-url``, ``put`` (to
        storage), ``complete``."""
        names = {
            "/api/agent/backup/start": "start",
            "/api/agent/backup/progress": "progress",
            "/api/agent/backup/upload/part": "part-url",
            "/api/agent/backup/complete": "complete",
        }
        return [
            names.get(path, "put")
            for method, path in self.seen
            if path in names or (method == "PUT" and not path.startswith("/api/"))
        ]


def test_a_small_archive_sends_its_progress_as_the_log_opens_before_the_upload(
    tmp_path: Path, source: Path
) -> None:
    """Under the multipart threshold the log opens only once the archive is complete: the scan's
    and the archiving's progress, kept until then, go to the server before the PUT (the interval
    is an hour here: only the flush can have sent it)."""
    fake = OrderedBackApp([config("c1", str(source))])
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path), progress_interval=3600)
    result = runner.run_manual()
    assert result.ok
    [log] = fake.logs.values()
    [progress] = fake.progress
    assert progress["logId"] == log.id
    assert progress["phase"] == "uploading"
    assert progress["filesDone"] == progress["filesTotal"] == 1
    assert progress["bytesDone"] == progress["bytesTotal"] == 6000
    assert fake.order() == ["start", "progress", "put", "complete"]


def test_a_multipart_archive_sends_its_progress_as_the_upload_starts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(bytes(range(256)) * (12 * MIB // 256))
    fake = OrderedBackApp([config("c1", str(src), compression=False)])
    fake.part_size = 5 * MIB

    def make(plane: ControlPlane, events: EventSink) -> BackupEngine:
        upload = UploadOptions(multipart_threshold=5 * MIB, part_size=5 * MIB, concurrency=1)
        options = EngineOptions(temp_dir=tmp_path / "agent-tmp", upload=upload)
        return BackupEngine(plane, HttpStorage(transport=fake.transport), options, events=events)

    runner = Runner(plane_for(fake), make, progress_interval=3600)
    assert runner.run_manual().ok
    [log] = fake.logs.values()
    assert log.multipart
    first = fake.progress[0]
    assert first["logId"] == log.id and first["phase"] == "archiving"
    assert 0 < first["bytesDone"] < first["bytesTotal"] == 12 * MIB
    order = fake.order()
    assert order[:3] == ["start", "progress", "part-url"], order


def test_a_failure_before_the_upload_sends_no_progress(tmp_path: Path) -> None:
    """The log the engine opens only to record a failure gets no progress event."""
    fake = LeasingBackApp([config("c1", str(tmp_path / "not-there"))], Clock())
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path), progress_interval=3600)
    result = runner.run_manual()
    [failed] = result.results
    assert failed.status == "failed" and "Source folder not found" in (failed.error or "")
    assert len(fake.logs) == 1 and fake.progress == []


def test_a_lease_that_cannot_be_asked_for_is_a_failed_backup(tmp_path: Path, source: Path) -> None:
    """The server stops answering between the config list and the lease: the config is not
    backed up, and that is a failure (recorded), not a skip."""

    class Unreachable(LeasingBackApp):
        def handle(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/api/agent/lease":
                raise httpx.ConnectError("connection refused", request=request)
            return super().handle(request)

    fake = Unreachable([config("c1", str(source))], Clock())
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path))
    result = runner.run_manual()
    [failed] = result.results
    assert failed.status == "failed" and result.skipped == ()
    assert (failed.error or "").startswith("not started: cannot take the run lease: ")
    assert fake.starts == []


def test_the_flush_waits_for_a_slow_server_only_so_long() -> None:
    """A server that does not answer (or rate-limits with a long Retry-After) must not hold the
    backup up: ``flush`` gives up waiting (the send finishes in the background)."""
    release = threading.Event()
    got: list[dict[str, Any]] = []

    def send(payload: dict[str, Any]) -> None:
        got.append(payload)
        release.wait(30)

    log_id: list[str | None] = [None]
    reporter = ProgressReporter(send, lambda: log_id[0], interval=3600)
    try:
        assert reporter.flush(timeout=0.1) is False and got == []  # no log yet: nothing to send
        log_id[0] = "log-1"
        assert reporter.flush(timeout=0.1) is False  # still sending, but we did not wait for it
        assert not release.is_set()
        for _ in range(100):  # the background send has begun (it is what blocks)
            if got:
                break
            release.wait(0.05)
        [first] = got
        assert first["logId"] == "log-1" and first["phase"] == "scanning"
        release.set()
        assert reporter.flush(send=got.append, timeout=5) is True
        assert len(got) == 2 and reporter.sent >= 1
    finally:
        release.set()
        reporter.close()
