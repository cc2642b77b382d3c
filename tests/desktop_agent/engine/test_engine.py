"""The engine's run flow against an in-memory BackApp (tests/support/fakes.py) over
httpx.MockTransport: what reaches the server and storage, in which order, and what is left behind when
something fails."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from desktop_agent.engine import (
    ApiClient,
    BackupEngine,
    CancelToken,
    EngineOptions,
    Event,
    FileStarted,
    HttpStorage,
    RetryPolicy,
    UploadOptions,
)
from tests.support.fakes import API_KEY, STORAGE_HOST, FakeBackApp, _s3_error, config
from tests.support.trees import build_awkward_tree, extracted_root, random_tree, snapshot

KIB = 1024


def make_engine(
    fake: FakeBackApp, tmp_path: Path, events: Any = None, **upload: Any
) -> BackupEngine:
    plane = ApiClient(
        "https://backapp.test",
        API_KEY,
        transport=fake.transport,
        sleep=lambda s: None,
        retry=RetryPolicy(max_attempts=4, base_delay=0.0),
    )
    storage = HttpStorage(transport=fake.transport)
    upload.setdefault("retry", RetryPolicy(max_attempts=4, base_delay=0.0))
    options = EngineOptions(temp_dir=tmp_path / "agent-tmp", upload=UploadOptions(**upload))
    return BackupEngine(plane, storage, options, events=events)


def extract(data: bytes, tmp_path: Path, flags: str = "-xzf") -> Path:
    archive = tmp_path / "landed"
    archive.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", *flags.split(), str(archive), "-C", str(out)], check=True)
    return out


def test_small_backup_is_one_put_with_signed_size_and_sha(tmp_path: Path) -> None:
    src = build_awkward_tree(tmp_path / "src", big=64 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    events: list[Event] = []
    result = make_engine(fake, tmp_path, events.append).run()

    assert result.ok and not result.has_file_errors
    [r] = result.results
    data = fake.only_object()
    assert r.size == len(data) and r.sha256 == hashlib.sha256(data).hexdigest() and not r.multipart
    [log] = fake.logs.values()
    assert (log.declared_size, log.declared_sha256) == (len(data), r.sha256)  # signed into the URL
    assert log.status == "completed" and log.complete is not None
    assert log.complete["size"] == len(data) and log.complete["bytesTransferred"] == len(data)
    assert log.complete["filesProcessed"] == r.files_processed > 10 and log.complete["errors"] == []
    assert fake.api_keys_seen_by_storage == [None]
    assert fake.heartbeats == 2  # at the start and at the end
    assert snapshot(extracted_root(extract(data, tmp_path), src)) == snapshot(src)
    kinds = [e.kind for e in events]
    assert kinds[:5] == [
        "run_started",
        "config_started",
        "scan_started",
        "scan_progress",
        "scan_finished",
    ]
    assert kinds[-2:] == ["backup_finished", "run_finished"] and "file_started" in kinds
    assert fake.agent_logs[-1]["level"] == "info"
    # For the person reading the agent's log in the web console: a size, not a byte count.
    message = fake.agent_logs[-1]["message"]
    size = (
        f"{len(data) / 1024:.1f} KiB" if len(data) < 1024**2 else f"{len(data) / 1024**2:.1f} MiB"
    )
    assert message == f"Backup 'Config c1' completed: {r.files_processed} files, {size}"
    assert not (tmp_path / "agent-tmp").exists()  # cleaned up


def test_large_backup_goes_up_in_parts(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1100 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def slow_storage(request: httpx.Request) -> None:
        if request.url.host == STORAGE_HOST:
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.02)
            with lock:
                in_flight[0] -= 1
        return None

    fake.faults = slow_storage
    result = make_engine(
        fake, tmp_path, multipart_threshold=200 * KIB, part_size=128 * KIB, concurrency=2
    ).run()
    assert result.ok, result
    [r] = result.results
    data = fake.only_object()
    assert r.multipart and r.size == len(data) and r.sha256 == hashlib.sha256(data).hexdigest()
    parts = fake.count("POST", "/api/agent/backup/upload/part")
    assert parts == -(-len(data) // (128 * KIB))
    assert fake.count("POST", "/api/agent/backup/upload/complete") == 1
    assert 1 <= peak[0] <= 2  # never more parts in flight than the concurrency
    out = extracted_root(extract(data, tmp_path), src)
    assert (out / "random.bin").read_bytes() == (src / "random.bin").read_bytes()


def _fail_first(path_part: str, answer: httpx.Response, times: int = 1):  # type: ignore[no-untyped-def]
    left = [times]

    def fault(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == STORAGE_HOST and path_part in str(request.url) and left[0] > 0:
            left[0] -= 1
            return answer
        return None

    return fault


@pytest.mark.parametrize(
    "answer",
    [_s3_error(503, "SlowDown"), _s3_error(403, "AccessDenied"), httpx.Response(500)],
    ids=["503", "expired-403", "500"],
)
def test_a_failed_part_is_resent_with_a_fresh_url(tmp_path: Path, answer: httpx.Response) -> None:
    src = random_tree(tmp_path / "src", 600 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    fake.faults = _fail_first("partNumber=2&", answer, times=2)
    result = make_engine(fake, tmp_path, multipart_threshold=128 * KIB, part_size=128 * KIB).run()
    assert result.ok, result
    parts = -(-len(fake.only_object()) // (128 * KIB))
    # part 2 was asked for three times (two failures, one success); nothing else was re-sent
    assert fake.count("POST", "/api/agent/backup/upload/part") == parts + 2
    assert fake.count("POST", "/api/agent/backup/start") == 1


def test_a_connection_error_on_a_single_put_is_retried(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 10 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    left = [1]

    def fault(request: httpx.Request) -> Exception | None:
        if request.url.host == STORAGE_HOST and left[0]:
            left[0] -= 1
            return httpx.ConnectError("connection reset")
        return None

    fake.faults = fault
    assert make_engine(fake, tmp_path).run().ok


def test_a_part_that_keeps_failing_aborts_the_upload(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 600 * KIB)
    other = random_tree(tmp_path / "other", 1 * KIB)
    fake = FakeBackApp([config("c1", str(src)), config("c2", str(other))])
    fake.faults = _fail_first("partNumber=3&", _s3_error(400, "BadDigest"), times=99)
    result = make_engine(fake, tmp_path, multipart_threshold=128 * KIB, part_size=128 * KIB).run()
    r1, r2 = result.results
    assert r1.status == "failed" and "BadDigest" in (r1.error or "")
    assert r2.ok  # the run went on
    log1 = next(lg for lg in fake.logs.values() if lg.config_id == "c1")
    assert log1.status == "failed" and "BadDigest" in (log1.error or "")
    assert log1.parts == {}  # aborted: storage freed the parts
    assert fake.count("POST", "/api/agent/backup/upload/abort") == 1
    assert not any("c1" in k for k in fake.objects)
    assert [m["level"] for m in fake.agent_logs] == ["error", "info"]
    assert result.ok is False


@pytest.mark.parametrize("features", [["backup-cancelled"], []], ids=["server", "older-server"])
def test_cancel_aborts_cleanly_and_marks_the_log_cancelled(
    tmp_path: Path, features: list[str]
) -> None:
    """A cancel is ``cancelled``, not a failure: on a server that knows the status (an older one
    records it as failed, the only word it has), and always in the agent's own result."""
    src = random_tree(tmp_path / "src", 900 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    fake.features = features
    cancel = CancelToken()

    def cancel_on_part_2(request: httpx.Request) -> None:
        if (
            request.url.path == "/api/agent/backup/upload/part"
            and b'"partNumber":2' in request.read()
        ):
            cancel.cancel()
        return None

    fake.faults = cancel_on_part_2
    result = make_engine(fake, tmp_path, multipart_threshold=128 * KIB, part_size=128 * KIB).run(
        cancel=cancel
    )
    [r] = result.results
    assert r.status == "cancelled" and r.error == "cancelled"
    assert not result.ok and result.cancelled
    [log] = fake.logs.values()
    expected = "cancelled" if features else "failed"
    assert log.status == expected and log.error == "cancelled" and log.parts == {}
    assert fake.count("POST", "/api/agent/backup/upload/abort") == 1
    assert fake.objects == {}
    assert [m["level"] for m in fake.agent_logs] == ["info"]  # not an error line


def test_a_stop_that_is_not_deliberate_is_a_failure(tmp_path: Path) -> None:
    """A lost run lease stops the backup too, but that is a failure (someone else runs it)."""
    src = random_tree(tmp_path / "src", 900 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    fake.features = ["backup-cancelled"]
    cancel = CancelToken()
    cancel.cancel("stopped: the run lease was lost", deliberate=False)
    [r] = make_engine(fake, tmp_path).run(cancel=cancel).results
    assert r.status == "failed"


def test_a_cancel_before_the_upload_leaves_no_log(tmp_path: Path) -> None:
    """Cancelled during the scan: nothing was uploaded and nothing failed, so there is nothing to
    put in the history (a failure there opens a log, to say why)."""
    src = random_tree(tmp_path / "src", 64 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    fake.features = ["backup-cancelled"]
    cancel = CancelToken()

    def cancel_at_scan(event: Event) -> None:
        if type(event).__name__ == "ScanStarted":
            cancel.cancel("cancelled by the user")

    [r] = make_engine(fake, tmp_path, cancel_at_scan).run(cancel=cancel).results
    assert r.status == "cancelled" and fake.logs == {}


def test_missing_source_fails_that_config_and_the_run_goes_on(tmp_path: Path) -> None:
    good = random_tree(tmp_path / "good", 1 * KIB)
    fake = FakeBackApp(
        [config("bad", str(tmp_path / "nowhere"), str(good)), config("good", str(good))]
    )
    result = make_engine(fake, tmp_path).run()
    bad, ok = result.results
    # Said as a person would, once: the reason, not also a per-file error of a backup that never
    # read a file (pages show those as "could not be read; the rest of the backup went on").
    why = f"Source folder not found: {tmp_path / 'nowhere'}"
    assert bad.status == "failed" and bad.error == why and ok.ok
    bad_log = next(lg for lg in fake.logs.values() if lg.config_id == "bad")
    assert bad_log.status == "failed" and bad_log.error == why
    assert bad_log.complete is not None
    assert bad_log.complete["errors"] == []
    error_logs = [m for m in fake.agent_logs if m["level"] == "error"]
    assert len(error_logs) == 1 and why in error_logs[0]["message"]
    assert error_logs[0]["metadata"]["configId"] == "bad"


def test_per_file_errors_reach_backup_complete(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (src / name).write_text(name)
    fake = FakeBackApp([config("c1", str(src))])

    def delete_c_while_a_is_read(event: Event) -> None:
        if isinstance(event, FileStarted) and event.path.endswith("a.txt"):
            (src / "c.txt").unlink()

    result = make_engine(fake, tmp_path, delete_c_while_a_is_read).run()
    [r] = result.results
    assert r.ok and result.has_file_errors
    [log] = fake.logs.values()
    assert log.complete is not None
    assert log.complete["errors"] == [
        {"path": str(src / "c.txt"), "message": "vanished before it could be read"}
    ]
    assert log.complete["filesProcessed"] == 2
    assert fake.agent_logs[-1]["level"] == "warning"


def test_the_key_is_refused(tmp_path: Path) -> None:
    fake = FakeBackApp([config("c1", str(tmp_path))])
    engine = make_engine(fake, tmp_path)
    engine.plane = ApiClient("https://backapp.test", "bka_wrong", transport=fake.transport)  # type: ignore[assignment]
    result = engine.run()
    assert result.error and "401" in result.error and result.results == () and not result.ok


def test_a_taken_filename_gets_a_number(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    engine = make_engine(fake, tmp_path)
    fixed = engine._now()
    engine._now = lambda: fixed  # two runs in the same second
    assert engine.run().ok and engine.run().ok
    names = sorted(k.rsplit("/", 1)[1] for k in fake.objects)
    stamp = fixed.strftime("%Y-%m-%d-%H%M%S")
    assert names == [f"backup-{stamp}-2.tar.gz", f"backup-{stamp}.tar.gz"]


def test_failed_verification_is_not_a_success(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1 * KIB)
    fake = FakeBackApp([config("c1", str(src))])

    real_storage = fake._storage

    def truncating_storage(request: httpx.Request) -> httpx.Response:  # keeps one byte less
        response = real_storage(request)
        key = request.url.path.removeprefix("/bucket/")
        if key in fake.objects:
            fake.objects[key] = fake.objects[key][:-1]
        return response

    fake._storage = truncating_storage  # type: ignore[method-assign]
    [r] = make_engine(fake, tmp_path).run().results
    assert r.status == "failed" and "size mismatch" in (r.error or "")
    [log] = fake.logs.values()
    assert log.status == "failed"
    assert fake.count("POST", "/api/agent/backup/complete") == 1  # no second, contradicting call


def test_unknown_config_id(tmp_path: Path) -> None:
    fake = FakeBackApp([config("c1", str(tmp_path))])
    result = make_engine(fake, tmp_path).run(config_ids=["nope"])
    [r] = result.results
    assert r.status == "failed" and r.error == "no such config is assigned to this agent"
    assert fake.logs == {}


def test_zstd_and_plain_tar(tmp_path: Path) -> None:
    src = build_awkward_tree(tmp_path / "src", big=64 * KIB)
    fake = FakeBackApp(
        [config("z", str(src), compressionFormat="zstd"), config("t", str(src), compression=False)]
    )
    result = make_engine(fake, tmp_path).run()
    assert result.ok
    by_ext = {k.rsplit(".", 1)[1]: v for k, v in fake.objects.items()}
    assert set(by_ext) == {"zst", "tar"}
    for ext, flags in (("zst", "--zstd -xf"), ("tar", "-xf")):
        sub = tmp_path / ext
        sub.mkdir()
        assert snapshot(extracted_root(extract(by_ext[ext], sub, flags), src)) == snapshot(src)


def test_server_errors_on_start_are_retried(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1 * KIB)
    fake = FakeBackApp([config("c1", str(src))])
    left = [2]

    def busy(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/api/agent/backup/start" and left[0]:
            left[0] -= 1
            return httpx.Response(
                503, json={"success": False, "error": "unavailable", "detail": "x"}
            )
        return None

    fake.faults = busy
    assert make_engine(fake, tmp_path).run().ok
    assert fake.count("POST", "/api/agent/backup/start") == 3


def test_temp_dir_inside_a_source_is_not_backed_up(tmp_path: Path) -> None:
    src = tmp_path / "home"
    src.mkdir()
    (src / "doc.txt").write_text("doc")
    fake = FakeBackApp([config("c1", str(src))])
    engine = make_engine(fake, src)  # temp dir is home/agent-tmp
    (src / "agent-tmp").mkdir()
    (src / "agent-tmp" / "junk").write_text("junk")
    assert engine.run().ok
    out = extracted_root(extract(fake.only_object(), tmp_path), src)
    assert sorted(os.listdir(out)) == ["doc.txt"]


def test_a_malformed_answer_fails_the_config_not_the_run(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1 * KIB)
    fake = FakeBackApp([config("c1", str(src)), config("c2", str(src))])
    left = [1]

    def garbage(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/api/agent/backup/start" and left[0]:
            left[0] -= 1
            return httpx.Response(200, json={"success": True, "logId": 42, "upload": None})
        return None

    fake.faults = garbage
    first, second = make_engine(fake, tmp_path).run().results
    assert first.status == "failed" and "unexpected answer" in (first.error or "")
    assert second.ok
