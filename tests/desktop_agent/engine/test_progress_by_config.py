"""Progress before the log opens: the reporter sends it by ``configId`` only when the server said it
understands that (heartbeat ``features``), and switches to the log id once the log is open."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from desktop_agent.engine import (
    ArchiveProgress,
    CancelToken,
    Event,
    Job,
    Runner,
    ScanFinished,
    ScanProgress,
    ScanStarted,
)
from desktop_agent.engine._scheduling.progress import PROGRESS_BY_CONFIG, ProgressReporter
from tests.support.fakes import Clock, LeasingBackApp, config, engine_factory, plane_for


def _scan(files: int) -> ScanProgress:
    return ScanProgress(config_id="c1", files=files, dirs=1, bytes=files * 100)


def _archive(done: int, total: int = 10) -> ArchiveProgress:
    return ArchiveProgress(
        config_id="c1",
        files_done=done,
        files_total=total,
        bytes_done=done * 100,
        bytes_total=total * 100,
        archive_bytes=done * 50,
        rate=100.0,
        eta=1.0,
    )


def _wait_for(sent: list[dict[str, Any]], n: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sent) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_with_the_feature_the_scan_and_archiving_go_by_config_then_by_log() -> None:
    sent: list[dict[str, Any]] = []
    log_id: list[str | None] = [None]
    reporter = ProgressReporter(sent.append, lambda: log_id[0], config_id="c1", interval=0.05)
    try:
        reporter(ScanStarted(config_id="c1", sources=("/src",)))
        reporter(_scan(12_345))
        _wait_for(sent, 1)
        assert sent and sent[-1]["configId"] == "c1" and "logId" not in sent[-1]
        assert sent[-1]["phase"] == "scanning" and sent[-1]["filesTotal"] == 12_345
        time.sleep(0.1)
        reporter(_archive(3))
        _wait_for(sent, 2)
        assert sent[-1] == {
            "configId": "c1",
            "phase": "archiving",
            "filesDone": 3,
            "filesTotal": 10,
            "bytesDone": 300,
            "bytesTotal": 1000,
            "rate": 100.0,
            "eta": 1.0,
        }
        # a small archive is complete before its log opens: "uploading" waits for the log id
        before = len(sent)
        reporter(_archive(10))
        time.sleep(0.3)
        assert len(sent) == before
        log_id[0] = "log-1"
        _wait_for(sent, before + 1)
        assert sent[-1]["logId"] == "log-1" and sent[-1]["phase"] == "uploading"
        assert "configId" not in sent[-1]
    finally:
        reporter.close()
    first_log = next(i for i, p in enumerate(sent) if "logId" in p)
    assert all("configId" not in p for p in sent[first_log:])


def test_without_the_feature_nothing_goes_before_the_log() -> None:
    sent: list[dict[str, Any]] = []
    log_id: list[str | None] = [None]
    reporter = ProgressReporter(sent.append, lambda: log_id[0], interval=0.05)
    try:
        reporter(ScanStarted(config_id="c1", sources=("/src",)))
        reporter(_scan(50))
        reporter(_archive(3))
        time.sleep(0.4)
        assert sent == []
        log_id[0] = "log-1"
        _wait_for(sent, 1)
    finally:
        reporter.close()
    assert sent and all(p["logId"] == "log-1" and "configId" not in p for p in sent)
    assert sent[0]["phase"] == "archiving" and sent[0]["filesDone"] == 3


class FeatureBackApp(LeasingBackApp):
    """The in-memory server, advertising ``features`` in its heartbeat answers."""

    def __init__(self, configs: list[dict[str, Any]], clock: Clock, features: list[str]) -> None:
        super().__init__(configs, clock)
        self.features = features

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = super().handle(request)
        if request.url.path == "/api/agent/heartbeat" and response.status_code == 200:
            body = response.json()
            return httpx.Response(200, json={**body, "features": self.features})
        return response


@pytest.mark.parametrize("features", [[PROGRESS_BY_CONFIG], []], ids=["new-server", "old-server"])
def test_the_runner_uses_the_feature_only_when_advertised(
    tmp_path: Path, features: list[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello " * 1000)
    clock = Clock()
    fake = FeatureBackApp([config("c1", str(src))], clock, features)

    def slow_scan(event: Event) -> None:
        # the engine pauses after its scan (as on a big tree): the reporter has time to send
        if isinstance(event, ScanFinished):
            time.sleep(0.4)

    runner = Runner(
        plane_for(fake), engine_factory(fake, tmp_path), events=slow_scan, progress_interval=0.05
    )
    outcome = runner.run(Job("c1", trigger="schedule"), None, CancelToken())
    assert outcome.status == "completed", outcome
    assert runner.server_features == frozenset(features)
    assert fake.heartbeats == 1  # asked once, for the features
    [log] = fake.logs.values()
    by_config = [p for p in fake.progress if "configId" in p]
    by_log = [p for p in fake.progress if "logId" in p]
    assert by_log and all(p["logId"] == log.id and "configId" not in p for p in by_log)
    if features:
        assert by_config, fake.progress
        assert all(p["configId"] == "c1" for p in by_config)
        assert all(p["phase"] in ("scanning", "archiving") for p in by_config)
        # what the scan found, shown while the engine went on
        assert any(p["phase"] == "scanning" and p["filesTotal"] == 1 for p in by_config)
        first_log = fake.progress.index(by_log[0])
        assert all("configId" not in p for p in fake.progress[first_log:])
    else:
        assert by_config == []
    # a runner that heard a heartbeat (the daemon's) does not ask again
    runner.server_features = frozenset()
    runner.run(Job("c1", trigger="schedule"), None, CancelToken())
    assert fake.heartbeats == 1
