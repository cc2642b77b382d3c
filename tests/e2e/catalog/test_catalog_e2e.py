"""End to end: losing the server's database, with a real ``backapp serve``, a real S3 endpoint on
loopback, the real ``backapp-agent`` and the real ``backapp catalog`` commands.

An archive and a snapshot are made; the database file is deleted. ``catalog restore --latest``
brings the owner, the agent (its key answers again) and the history back, and the snapshot
restores exactly. The refusals (a database that is not empty, an object that is not a catalog
copy, another server secret) change nothing. The database is deleted again and no catalog copy is
used: ``catalog rebuild --from-bucket`` recreates the history from the metadata objects beside
each backup, so that the owner downloads the archive and the agent restores both backups exactly.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.agent_process import Agent, setup
from tests.support.paths import ROOT
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory
from tests.support.trees import MIB, extracted_root, random_file, snapshot

pytestmark = [pytest.mark.e2e]

PASSWORD = "correct horse battery"


def backapp(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The server's command line with a server's settings (database, bucket, secret)."""
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def lose_the_database(server: LiveServer) -> None:
    server.stop()
    for path in server.data_dir.glob("backapp.sqlite3*"):
        path.unlink()


def restart(
    factory: LiveServerFactory, server: LiveServer, s3: S3Endpoint, bucket: str
) -> LiveServer:
    """The same server again: same data folder, port (the agent's URL) and settings."""
    return factory.start(
        s3=s3,
        bucket=bucket,
        data_dir=server.data_dir,
        port=urlsplit(server.url).port,
        env={"BACKAPP_TASK_INTERVAL": "3600"},
    )


def heartbeat(server: LiveServer, key: str) -> int:
    return (
        server.agent_client(key).post("/api/agent/heartbeat", json={"version": "0.1.0"}).status_code
    )


def test_lose_the_database_restore_the_catalog_then_rebuild_from_the_bucket(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    random_file(src / "photos" / "a.bin", 2 * MIB, seed=7)
    (src / "notes.txt").write_text("what the catalog must find again\n")
    tree = snapshot(src)
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_TASK_INTERVAL": "3600"}
    )
    owner, agent_id, key, [archive_cfg, snapshot_cfg] = setup(
        server,
        {"name": "Archive", "sources": [{"path": str(src)}]},
        {"name": "Snapshots", "sources": [{"path": str(src)}], "options": {"type": "incremental"}},
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "cache"))
    done = agent.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    history = {b["configId"]: b for b in owner.backups()}
    archive, snap = history[archive_cfg["id"]], history[snapshot_cfg["id"]]
    assert archive["status"] == snap["status"] == "completed"
    assert snap["type"] == "incremental"

    # Beside each backup, its metadata object.
    bucket = s3_server.client()
    listed = [
        o["Key"]
        for page in bucket.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for o in page.get("Contents", [])
    ]
    metas = {k.rsplit("/", 1)[1]: k for k in listed if "/meta/" in k}
    assert set(metas) == {f"{archive['id']}.json", f"{snap['id']}.json"}
    assert metas[f"{archive['id']}.json"].startswith(archive["s3Path"].rpartition("/")[0])

    made = backapp(server.env, "catalog", "backup", "--json")
    assert made.returncode == 0, made.stderr
    copy_key = json.loads(made.stdout)["copy"]["key"]
    assert copy_key.startswith("server/catalog/")

    # Level 1: the database is lost; the newest catalog copy brings it back.
    lose_the_database(server)
    restored = backapp(server.env, "catalog", "restore", "--latest", "--json")
    assert restored.returncode == 0, restored.stderr
    report = json.loads(restored.stdout)
    assert report["key"] == copy_key
    assert (report["users"], report["agents"], report["configs"], report["backups"]) == (1, 1, 2, 2)
    server = restart(live_server_factory, server, s3_server, s3_bucket)
    assert heartbeat(server, key) == 200
    owner = server.owner(password=PASSWORD, signup=False)
    assert {b["id"]: b["status"] for b in owner.backups()} == {
        archive["id"]: "completed",
        snap["id"]: "completed",
    }
    out = tmp_path / "restored-1"
    done = agent.run("restore", snap["id"], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == tree

    # Refusals change nothing: a database that is not empty, an object that is not a catalog
    # copy (even with --force), a copy opened with another server secret.
    before = owner.backups()
    refused = backapp(server.env, "catalog", "restore", "--latest")
    assert refused.returncode == 1 and "not empty" in refused.stderr, refused.stderr
    meta_key = metas[f"{archive['id']}.json"]
    refused = backapp(server.env, "catalog", "restore", "--from", meta_key, "--force")
    assert refused.returncode == 1, refused.stderr
    assert "is not a BackApp catalog copy" in refused.stderr
    stranger = {**server.env, "BACKAPP_SECRET_KEY": "another-secret-0123456789abcdef0123"}
    refused = backapp(stranger, "catalog", "restore", "--latest", "--force")
    assert refused.returncode == 1 and "another server secret" in refused.stderr, refused.stderr
    assert owner.backups() == before
    assert heartbeat(server, key) == 200

    # Level 2: lost again, and no catalog copy is used: the bucket's metadata objects alone.
    lose_the_database(server)
    rebuilt = backapp(server.env, "catalog", "rebuild", "--from-bucket", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr + rebuilt.stdout
    summary = json.loads(rebuilt.stdout)
    assert summary["users"] == ["owner@example.com"]
    assert (summary["agents"], summary["configs"], summary["backups"]) == (1, 2, 2)
    assert (summary["snapshots"], summary["expired"], summary["failed"]) == (1, 0, [])
    # The account comes back without a password (the bucket holds none): the owner sets one.
    password = backapp(
        server.env,
        "user",
        "password",
        "--email",
        "owner@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert password.returncode == 0, password.stderr
    server = restart(live_server_factory, server, s3_server, s3_bucket)
    assert heartbeat(server, key) == 200
    owner = server.owner(password=PASSWORD, signup=False)
    again = {b["id"]: b for b in owner.backups()}
    assert {i: b["status"] for i, b in again.items()} == {
        archive["id"]: "completed",
        snap["id"]: "completed",
    }
    assert again[archive["id"]]["sha256"] == archive["sha256"]
    assert again[archive["id"]]["configId"] == archive_cfg["id"]

    # The owner downloads the archive; the agent restores both, from a fresh cache.
    link = owner.request("GET", f"/api/backups/{archive['id']}/download")
    assert link.status_code == 200, link.text
    body = httpx.get(link.json()["download"]["url"], timeout=30).content
    assert hashlib.sha256(body).hexdigest() == archive["sha256"]
    fresh = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "fresh-cache"))
    for backup in (archive, snap):
        out = tmp_path / f"rebuilt-{backup['id']}"
        done = fresh.run("restore", backup["id"], "--to", str(out))
        assert done.returncode == 0, done.stderr + done.stdout
        assert snapshot(extracted_root(out, src)) == tree

    # And the next snapshot goes on from the rebuilt repository.
    (src / "later.txt").write_text("after the rebuild\n")
    done = fresh.run("run", "--json", "--config", snapshot_cfg["id"])
    assert done.returncode == 0, done.stderr + done.stdout


def test_catalog_copies_keep_the_newest(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str
) -> None:
    server = live_server_factory.start(
        s3=s3_server,
        bucket=s3_bucket,
        env={"BACKAPP_TASK_INTERVAL": "3600", "BACKAPP_CATALOG_KEEP": "2"},
    )
    server.owner()
    made = []
    for _ in range(3):
        done = backapp(server.env, "catalog", "backup", "--json")
        assert done.returncode == 0, done.stderr
        made.append(json.loads(done.stdout)["copy"]["key"])
    listed = backapp(server.env, "catalog", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["key"] for c in json.loads(listed.stdout)] == made[1:]
