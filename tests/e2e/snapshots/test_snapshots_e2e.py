"""End to end: incremental backups (snapshots) with a real ``backapp serve``, a real S3 endpoint on
loopback and the real ``backapp-agent`` command line: three snapshots of an awkward tree with
changes in between, each restored exactly as the tree was; one file restored alone; the bucket
scanned for anything readable; bad requests to the snapshot endpoints refused precisely; a run
killed mid-upload leaves an ``interrupted`` snapshot and the next run reuses the packs it stored.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_process import Agent, events_of, setup
from tests.support.faults import FaultProxy, start_behind_proxy
from tests.support.s3 import ON_BOTH, S3Endpoint
from tests.support.server_process import LiveServerFactory, only, wait_for
from tests.support.trees import MIB, build_awkward_tree, extracted_root, random_file, snapshot

pytestmark = [pytest.mark.e2e]


CANARY_NAME = "canary-7f3a9c-secret-name.txt"
CANARY = b"CANARY-CONTENT-2c9d41e0b7-" * 40


def all_objects(s3: S3Endpoint, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_three_snapshots_restore_exactly_and_nothing_readable_is_stored(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    (src / CANARY_NAME).write_bytes(CANARY)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, agent_id, key, [cfg] = setup(
        server,
        {"name": "Home", "sources": [{"path": str(src)}], "options": {"type": "incremental"}},
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))

    states: list[dict[str, tuple[object, ...]]] = []
    ids: list[str] = []
    for step in range(3):
        if step == 1:
            (src / "plain.txt").write_bytes(b"edited after the first snapshot\n")
            (src / "added.bin").write_bytes(os.urandom(200_000))
            (src / "sub dir" / "nested" / "deep.txt").unlink()
        elif step == 2:
            (src / "empty dir" / "now not empty").write_text("x")
            shutil.rmtree(src / "locked dir")
            os.symlink("added.bin", src / "link-to-added")
        done = agent.run("run", "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        finished = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
        assert len(finished) == 1 and finished[0]["backupType"] == "incremental", finished
        states.append(snapshot(src))
        ids.append(finished[0]["logId"])

    backups = {b["id"]: b for b in owner.backups()}
    assert [backups[i]["status"] for i in ids] == ["completed"] * 3
    assert all(backups[i]["type"] == "incremental" for i in ids)
    first, second, third = (backups[i] for i in ids)
    # The later snapshots uploaded only what changed (plus folder listings).
    assert first["newBytes"] > 1_500_000  # the tree, compressed
    assert second["newBytes"] < 300_000 and third["newBytes"] < 50_000
    assert second["size"] >= first["size"] - 10_000

    listed = agent.run("snapshots", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)["snapshots"]] == ids[::-1]

    rel = str(src).lstrip("/")
    ls = agent.run("ls", ids[0], rel, "--json")
    assert ls.returncode == 0, ls.stderr
    paths = {json.loads(line)["path"] for line in ls.stdout.splitlines()}
    assert f"{rel}/{CANARY_NAME}" in paths and f"{rel}/sub dir/nested/deep.txt" in paths

    # Each snapshot restores on its own to the tree as it was when it was taken.
    for n, (backup_id, expected) in enumerate(zip(ids, states, strict=True)):
        out = tmp_path / f"restored-{n}"
        done = agent.run("restore", backup_id, "--to", str(out))
        assert done.returncode == 0, done.stderr + done.stdout
        assert snapshot(extracted_root(out, src)) == expected, n

    # One file alone: only that file is written, and little is downloaded.
    out = tmp_path / "one-file"
    done = agent.run("restore", ids[0], "--to", str(out), "--path", f"/{rel}/plain.txt", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    restored = [p for p in out.rglob("*") if p.is_file()]
    assert [p.name for p in restored] == ["plain.txt"]
    assert restored[0].read_bytes() == b"hello\n"
    end = [e for e in events_of(done.stdout) if e["event"] == "restore_finished"][-1]
    stored = sum(len(v) for k, v in all_objects(s3_server, s3_bucket).items() if "/repo/" in k)
    assert end["archiveSize"] < 0.05 * stored

    # Nothing readable left the machine: no content, no name, no path in any object or key. The
    # only objects outside the repository are the server's sealed copies of its own database
    # (their content is checked like every other object's).
    for object_key, data in all_objects(s3_server, s3_bucket).items():
        if not object_key.startswith("server/catalog/"):
            assert f"/agents/{agent_id}/repo/" in object_key, object_key
        for needle in (CANARY[:40], CANARY_NAME.encode(), str(src).encode(), b"plain.txt"):
            assert needle not in data, (object_key, needle)
        assert CANARY_NAME not in object_key and "plain" not in object_key


def test_snapshot_endpoints_refuse_bad_input(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    server = live_server_factory.start()
    owner, _agent_id, key, [cfg, full] = setup(
        server,
        {"name": "Inc", "sources": [{"path": str(tmp_path)}], "options": {"type": "incremental"}},
        {"name": "Full", "sources": [{"path": str(tmp_path)}]},
    )
    other_owner_agent = owner.register_agent("second machine")[1]
    api = httpx.Client(base_url=server.url, headers={"X-Agent-API-Key": key})

    def post(path: str, body: dict[str, Any], k: str = key) -> httpx.Response:
        return api.post(path, json=body, headers={"X-Agent-API-Key": k})

    r = post("/api/agent/snapshot/start", {"configId": full["id"]})
    assert r.status_code == 400 and "incremental" in r.json()["detail"]
    r = post("/api/agent/snapshot/start", {"configId": cfg["id"]})
    assert r.status_code == 200, r.text
    started = r.json()
    backup_id = started["backupId"]
    assert started["repository"]["initialized"] is False and started["parent"] is None
    # A second start while the first holds the lease.
    assert post("/api/agent/snapshot/start", {"configId": cfg["id"]}).status_code == 409
    good = {"kind": "data", "name": "a" * 64, "size": 10, "sha256": "a" * 64}
    for bad in (
        {**good, "name": "xyz", "sha256": "xyz"},
        {**good, "name": "A" * 64, "sha256": "A" * 64},
        {**good, "name": "b" * 64},
        {**good, "size": 129 * 1024 * 1024},
        {**good, "size": 0},
        {**good, "kind": "tree"},
        {**good, "kind": "snapshot", "name": "0" * 8},
    ):
        r = post("/api/agent/snapshot/objects", {"backupId": backup_id, "objects": [bad]})
        assert r.status_code == 400, (bad, r.text)
    r = post("/api/agent/snapshot/objects", {"backupId": backup_id, "objects": [good] * 257})
    assert r.status_code == 400
    # Another agent of the same user: the snapshot is not its own.
    r = post(
        "/api/agent/snapshot/objects",
        {"backupId": backup_id, "objects": [good]},
        k=other_owner_agent,
    )
    assert r.status_code == 404
    # A URL for a pack; completing without having uploaded it names what is missing.
    r = post("/api/agent/snapshot/objects", {"backupId": backup_id, "objects": [good]})
    assert r.status_code == 200, r.text
    [slot] = r.json()["objects"]
    assert slot["exists"] is False and slot["seq"] == 0 and slot["upload"]["method"] == "PUT"
    from desktop_agent.engine.repo_protocol import encode_bitmap

    r = post(
        "/api/agent/snapshot/complete",
        {"backupId": backup_id, "status": "completed", "packs": encode_bitmap([0])},
    )
    assert r.status_code == 409, r.text
    missing = {(m["kind"], m["name"]) for m in r.json()["missing"]}
    assert ("data", "a" * 64) in missing and ("snapshot", backup_id) in missing
    r = post(
        "/api/agent/snapshot/complete",
        {"backupId": backup_id, "status": "completed", "packs": encode_bitmap([5])},
    )
    assert r.status_code == 400 and "beyond" in r.json()["detail"]
    r = post(
        "/api/agent/snapshot/complete",
        {"backupId": backup_id, "status": "completed", "packs": "not a bitmap"},
    )
    assert r.status_code == 400
    # Nothing was recorded: the backup is still running, and aborting it fails it.
    [row] = [b for b in owner.backups() if b["id"] == backup_id]
    assert row["status"] == "running"
    r = post("/api/agent/snapshot/abort", {"backupId": backup_id, "reason": "testing"})
    assert r.status_code == 200
    [row] = [b for b in owner.backups() if b["id"] == backup_id]
    assert row["status"] == "failed" and row["error"] == "testing"
    r = post("/api/agent/snapshot/objects", {"backupId": backup_id, "objects": [good]})
    assert r.status_code == 409
    r = api.post("/api/agent/repo/read", json={"objects": [{"kind": "data", "name": "a" * 64}]})
    assert r.status_code == 200 and r.json()["missing"] == [{"kind": "data", "name": "a" * 64}]
    # The owner cannot download a snapshot as an archive: it is encrypted on the machine.
    done = owner.request("GET", f"/api/backups/{backup_id}/download")
    assert done.status_code == 409


def test_a_killed_snapshot_is_interrupted_and_the_next_run_uploads_only_what_was_left(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    for i in range(8):
        random_file(src / f"part-{i}.bin", 8 * MIB)  # 64 MiB that does not compress: 4 packs
    server = start_behind_proxy(live_server_factory, s3_server, s3_bucket, proxy)
    owner, _agent_id, key, [cfg] = setup(
        server,
        {"name": "Big", "sources": [{"path": str(src)}], "options": {"type": "incremental"}},
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))
    client = s3_server.client()  # straight to S3, not through the slow proxy

    def packs() -> list[str]:
        listed = client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        return [o["Key"] for o in listed if "/repo/data/" in o["Key"]]

    proxy.rate = 4 * MIB
    proc = agent.popen("run", "--json")
    wait_for("a pack in storage", packs, timeout=120)
    proc.kill()  # SIGKILL: no abort, no complete, no lease release
    proc.wait(10)
    landed = set(packs())
    [ghost] = owner.backups()
    assert ghost["status"] == "running"

    proxy.rate = None
    again = agent.run("run", "--config", cfg["id"], "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" not in again.stderr
    old = only(owner, id=ghost["id"])
    assert old is not None and old["status"] == "interrupted", old
    new = only(owner, status="completed")
    assert new is not None and new["type"] == "incremental"
    # The packs the dead run stored are used, not uploaded again.
    assert new["newBytes"] <= 64 * MIB - 16 * MIB * len(landed) + 2 * MIB, (new, landed)
    assert landed <= set(packs())

    out = tmp_path / "restored"
    done = agent.run("restore", new["id"], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == snapshot(src)


def test_snapshots_on_the_local_disk_storage(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    """The embedded default (local storage) keeps the same rules as S3: checked, never overwritten,
    ranged reads for a single file."""
    src = build_awkward_tree(tmp_path / "src")
    server = live_server_factory.start()
    _owner, _agent_id, key, _ = setup(
        server,
        {"name": "Home", "sources": [{"path": str(src)}], "options": {"type": "incremental"}},
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))
    ids = []
    for step in range(2):
        if step == 1:
            (src / "added.bin").write_bytes(os.urandom(300_000))
        done = agent.run("run", "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        [end] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
        ids.append(end["logId"])
    expected = snapshot(src)
    out = tmp_path / "restored"
    done = agent.run("restore", ids[1], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == expected

    rel = str(src).lstrip("/")
    one = tmp_path / "one"
    done = agent.run("restore", ids[0], "--to", str(one), "--path", f"/{rel}/plain.txt")
    assert done.returncode == 0, done.stderr + done.stdout
    assert [p.read_bytes() for p in one.rglob("plain.txt")] == [b"hello\n"]


def test_a_snapshot_of_a_missing_folder_says_so(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    gone = tmp_path / "not there"
    server = live_server_factory.start()
    owner, _agent_id, key, _ = setup(
        server,
        {"name": "Gone", "sources": [{"path": str(gone)}], "options": {"type": "incremental"}},
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))
    done = agent.run("run")
    assert done.returncode == 1, done.stdout + done.stderr
    [backup] = owner.backups()
    assert backup["status"] == "failed"
    assert backup["error"] == f"Source folder not found: {gone}", backup
