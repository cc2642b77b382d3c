"""End to end: a real ``backapp serve`` process, a real S3 endpoint on loopback (moto server mode, and
SeaweedFS for the main paths) or the local-disk backend, and the real ``backapp-agent`` as a
subprocess. The object that lands is downloaded, extracted with the system ``tar`` and compared file
by file with the source tree.

Fault tests: a source file deleted during the backup, a source path that does not exist, and the S3
endpoint or the BackApp server going away in the middle of a multipart upload and coming back.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from tests.support.agent_process import Agent, events_of, extract, s3_object, setup
from tests.support.ports import free_port
from tests.support.s3 import ON_BOTH, S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import MIB, build_awkward_tree, extracted_root, random_file, snapshot

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tar") is None, reason="needs the system tar"),
]


# -- the happy paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_awkward_tree_lands_in_s3_and_extracts_identically(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, [cfg] = setup(
        server, {"name": "Awkward", "sources": [{"path": str(src)}]}
    )
    agent = Agent(tmp_path, server.url, key)

    done = agent.run("run", "--json")
    assert done.returncode == 0, done.stderr
    finished = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
    assert len(finished) == 1 and finished[0]["configId"] == cfg["id"]

    [backup] = owner.backups()
    assert backup["status"] == "completed", backup
    data = s3_object(s3_server, s3_bucket, backup["s3Path"])
    assert backup["size"] == len(data) and backup["sha256"] == hashlib.sha256(data).hexdigest()
    assert backup["filename"].endswith(".tar.gz") and backup["errors"] == []
    out = extract(data, tmp_path / "out", backup["filename"])
    assert snapshot(extracted_root(out, src)) == snapshot(src)

    status = agent.run("status")
    assert status.returncode == 0 and "Connection: online" in status.stdout
    assert backup["filename"] in status.stdout


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_multipart_archive_in_s3(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    random_file(src / "photos" / "raw.bin", 13 * MIB)  # random: the archive stays > 13 MiB
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, _ = setup(server, {"name": "Big", "sources": [{"path": str(src)}]})
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
    )
    done = agent.run("run", "--json")
    assert done.returncode == 0, done.stderr
    events = events_of(done.stdout)
    assert [e["multipart"] for e in events if e["event"] == "upload_started"] == [True]
    parts = max(e["partsDone"] for e in events if e["event"] == "upload_progress")

    [backup] = owner.backups()
    assert backup["status"] == "completed", backup
    data = s3_object(s3_server, s3_bucket, backup["s3Path"])
    assert backup["sha256"] == hashlib.sha256(data).hexdigest() and len(data) > 13 * MIB
    assert parts == -(-len(data) // (5 * MIB)) >= 3  # 5 MiB parts and the rest
    out = extract(data, tmp_path / "out", backup["filename"])
    assert snapshot(extracted_root(out, src)) == snapshot(src)


def test_local_disk_backend_with_zstd_and_parts(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    random_file(src / "big.random", 7 * MIB)
    server = live_server_factory.start()
    owner, _agent_id, key, _ = setup(
        server,
        {
            "name": "Local",
            "sources": [{"path": str(src)}],
            "options": {"compressionFormat": "zstd"},
        },
    )
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
    )
    done = agent.run("run")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "OK   Local:" in done.stdout
    [backup] = owner.backups()
    assert backup["status"] == "completed" and backup["filename"].endswith(".tar.zst")
    data = (server.data_dir / "storage" / "objects" / backup["s3Path"]).read_bytes()
    assert backup["sha256"] == hashlib.sha256(data).hexdigest()
    out = extract(data, tmp_path / "out", backup["filename"])
    assert snapshot(extracted_root(out, src)) == snapshot(src)


# -- faults ------------------------------------------------------------------------------------------


def test_missing_source_fails_its_config_and_the_run_goes_on(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.txt").write_text("a")
    missing = tmp_path / "not-there"
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, agent_id, key, [bad_cfg, good_cfg] = setup(
        server,
        {"name": "Broken", "sources": [{"path": str(missing)}]},
        {"name": "Fine", "sources": [{"path": str(good)}]},
    )
    done = Agent(tmp_path, server.url, key).run("run")
    assert done.returncode == 1
    assert f"FAILED Broken: Source folder not found: {missing}" in done.stdout
    assert "OK   Fine:" in done.stdout

    backups = {b["configId"]: b for b in owner.backups()}
    assert backups[good_cfg["id"]]["status"] == "completed"
    failed = backups[bad_cfg["id"]]
    assert failed["status"] == "failed" and failed["error"] == f"Source folder not found: {missing}"
    assert failed["errors"] == []  # no file was read: nothing to list as a per-file error
    logs = owner.request("GET", f"/api/agents/{agent_id}/logs").json()["logs"]
    assert any(lg["level"] == "error" and "Broken" in lg["message"] for lg in logs)
    # nothing half-recorded: no object for the failed config
    assert (
        s3_server.client()
        .list_objects_v2(Bucket=s3_bucket, Prefix=failed["s3Path"])
        .get("KeyCount", 0)
        == 0
    )


def test_file_deleted_during_the_backup_is_a_per_file_error(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    # Archived first (names are sorted) and slow to compress, so the victim is read well after the
    # scan has listed it.
    with open(src / "0-big.txt", "wb") as fh:
        rng = random.Random(3)
        words = [rng.randbytes(6).hex().encode() for _ in range(5000)]
        for _ in range(48):
            fh.write(b" ".join(rng.choice(words) for _ in range(80_000)))
    (src / "victim.txt").write_text("soon gone")
    (src / "z-kept.txt").write_text("kept")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, _ = setup(server, {"name": "Racy", "sources": [{"path": str(src)}]})
    agent = Agent(tmp_path, server.url, key)

    proc = agent.popen("run", "--json")
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if json.loads(line)["event"] == "scan_finished":
            (src / "victim.txt").unlink()
    proc.wait(timeout=300)
    assert proc.returncode == 3, "".join(lines) + (proc.stderr.read() if proc.stderr else "")

    [backup] = owner.backups()
    assert backup["status"] == "completed"
    assert backup["errors"] == [
        {"path": str(src / "victim.txt"), "message": "vanished before it could be read"}
    ]
    data = s3_object(s3_server, s3_bucket, backup["s3Path"])
    out = extracted_root(extract(data, tmp_path / "out", backup["filename"]), src)
    assert sorted(os.listdir(out)) == ["0-big.txt", "z-kept.txt"]
    assert (out / "z-kept.txt").read_text() == "kept"


@pytest.fixture
def own_s3() -> Iterator[tuple[S3Endpoint, int, list[ThreadedMotoServer]]]:
    """A moto server of this test's own (the shared one must not go down), on a known port."""
    port = free_port()
    servers = [ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)]
    servers[0].start()
    try:
        yield S3Endpoint(endpoint_url=f"http://127.0.0.1:{port}"), port, servers
    finally:
        servers[-1].stop()


def _run_until_multipart_started(agent: Agent) -> tuple[subprocess.Popen[str], list[str]]:
    proc = agent.popen("run", "--json")
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        event = json.loads(line)
        if event["event"] == "upload_started":
            assert event["multipart"] is True
            return proc, lines
    raise AssertionError("the upload never started:\n" + "".join(lines))


def _finish(proc: subprocess.Popen[str], lines: list[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + out, err


def test_s3_goes_away_mid_upload_and_comes_back(
    live_server_factory: LiveServerFactory,
    own_s3: tuple[S3Endpoint, int, list[Any]],
    tmp_path: Path,
) -> None:
    s3, port, servers = own_s3
    bucket = "e2e-outage"
    s3.client().create_bucket(Bucket=bucket)
    src = tmp_path / "src"
    random_file(src / "data.bin", 30 * MIB)
    server = live_server_factory.start(s3=s3, bucket=bucket)
    owner, _agent_id, key, _ = setup(server, {"name": "Outage", "sources": [{"path": str(src)}]})
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
    )
    proc, lines = _run_until_multipart_started(agent)
    servers[0].stop()  # S3 is gone while the parts go up
    time.sleep(2.0)
    servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
    servers[-1].start()  # ...and back (moto keeps its state in this process)
    code, out, err = _finish(proc, lines)
    assert code == 0, out + err
    assert "trying again" in err  # parts were re-sent, not the archive
    [backup] = owner.backups()
    assert backup["status"] == "completed"
    data = s3_object(s3, bucket, backup["s3Path"])
    assert hashlib.sha256(data).hexdigest() == backup["sha256"]
    out_dir = extracted_root(extract(data, tmp_path / "out", backup["filename"]), src)
    assert (out_dir / "data.bin").read_bytes() == (src / "data.bin").read_bytes()


def test_server_goes_away_mid_upload_and_comes_back(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    random_file(src / "data.bin", 30 * MIB)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, _ = setup(
        server, {"name": "Flaky server", "sources": [{"path": str(src)}]}
    )
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
        BACKAPP_AGENT_UPLOAD_CONCURRENCY="1",
    )
    port = int(server.url.rsplit(":", 1)[1])
    proc, lines = _run_until_multipart_started(agent)
    server.stop()  # the BackApp server goes away (no more part URLs)
    time.sleep(1.0)
    restarted = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, port=port, data_dir=server.data_dir
    )
    code, out, err = _finish(proc, lines)
    assert code == 0, out + err
    owner2 = restarted.owner(signup=False)
    [backup] = owner2.backups()
    assert backup["status"] == "completed"
    data = s3_object(s3_server, s3_bucket, backup["s3Path"])
    assert hashlib.sha256(data).hexdigest() == backup["sha256"]
    out_dir = extracted_root(extract(data, tmp_path / "out", backup["filename"]), src)
    assert (out_dir / "data.bin").read_bytes() == (src / "data.bin").read_bytes()
    del owner


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_cancel_with_ctrl_c_aborts_and_records_the_reason(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    random_file(src / "data.bin", 40 * MIB)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, _ = setup(server, {"name": "Cancelled", "sources": [{"path": str(src)}]})
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
        BACKAPP_AGENT_UPLOAD_CONCURRENCY="1",
    )
    proc, lines = _run_until_multipart_started(agent)
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc, lines)
    # A cancel is not a failure: exit status 130 (interrupted), recorded as cancelled.
    assert code == 130, out + err
    [backup] = owner.backups()
    assert backup["status"] == "cancelled" and backup["error"] == "cancelled by the user"
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == []  # aborted: no parts left behind
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    # the server's own catalog copies (server/catalog/) aside, nothing was stored
    assert [o["Key"] for o in listed if not o["Key"].startswith("server/")] == []
