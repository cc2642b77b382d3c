"""End to end: a new laptop continues the old one's snapshot repository (issue 14). Two agents of
one user, each in its own HOME and config folder, a real ``backapp serve``, a real S3 endpoint
(moto) on loopback and the real ``backapp-agent`` command line.

A backs up; B cannot continue A's repository without the owner's mark, nor with a wrong code;
with both, ``recovery continue`` hands the repository to B, whose first snapshot uploads only a
small fraction of what A's did. A can no longer add to it. A's and B's snapshots restore exactly,
also after retention expired A's first snapshot and pruning removed it from the old prefix.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.agent_process import Agent, events_of
from tests.support.paths import ROOT
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory
from tests.support.trees import MIB, build_awkward_tree, extracted_root, random_file, snapshot

pytestmark = [pytest.mark.e2e]


def machine(tmp_path: Path, name: str, server_url: str, key: str) -> Agent:
    home = tmp_path / name
    home.mkdir()
    return Agent(home, server_url, key, HOME=str(home), BACKAPP_CACHE_DIR=str(home / "cache"))


def backapp(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot_of(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr + done.stdout
    [finished] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
    assert finished["backupType"] == "incremental", finished
    return finished


def keys_of(home: Path) -> list[Path]:
    folder = home / "agent-config" / "repository-keys"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_new_laptop_continues_the_old_repository(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src", big=3 * MIB)
    (src / "absolute-link").unlink()  # skipped by every restore on purpose (tested elsewhere)
    random_file(src / "photos" / "a.bin", 4 * MIB, seed=7)
    random_file(src / "only-old.bin", 2 * MIB, seed=8)
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_TASK_INTERVAL": "3600"}
    )
    owner = server.owner()
    a_id, a_key = owner.register_agent("old laptop")
    b_id, b_key = owner.register_agent("new laptop")
    a_cfg = owner.create_config(
        a_id, name="Old", sources=[{"path": str(src)}], options={"type": "incremental"}
    )
    a = machine(tmp_path, "a", server.url, a_key)
    b = machine(tmp_path, "b", server.url, b_key)
    first = a.run("run", "--json")
    a_done = snapshot_of(first)
    a_snap = str(a_done["logId"])
    expected_a = snapshot(src)
    # A second, small snapshot without one file: the first one is then the only one using it.
    (src / "only-old.bin").unlink()
    a_snap2 = str(snapshot_of(a.run("run", "--json"))["logId"])
    expected_a2 = snapshot(src)
    done = a.run("recovery", "init", "--json")
    assert done.returncode == 0, done.stderr
    code = json.loads(done.stdout)["recoveryCode"]

    # Without the owner's mark: 404, nothing stored on B.
    done = b.run(
        "recovery", "continue", "--from-agent", a_id, "--recovery-code-stdin", stdin=code + "\n"
    )
    assert done.returncode == 1 and "404" in done.stderr, done.stderr
    assert keys_of(tmp_path / "b") == []
    r = owner.request("POST", f"/api/agents/{b_id}/inherit", json={"fromAgentId": a_id})
    assert r.status_code == 201, r.text

    # The agent API names the machine B replaces, with its one snapshot.
    api = server.agent_client(b_key)
    got = api.get("/api/agent/inherited")
    assert got.status_code == 200, got.text
    assert got.json()["agents"] == [
        {"agentId": a_id, "name": "old laptop", "snapshots": 2, "continued": False}
    ]

    # A wrong code: refused before the server is asked to hand anything over.
    wrong = code[:-4] + ("AAAA" if not code.endswith("AAAA") else "BBBB")
    done = b.run(
        "recovery", "continue", "--from-agent", a_id, "--recovery-code-stdin", stdin=wrong + "\n"
    )
    assert done.returncode != 0 and "recovery code" in done.stderr, done.stderr
    assert keys_of(tmp_path / "b") == []
    # A valid proof is needed too: a stolen API key and the mark are not enough.
    forged = api.post(
        "/api/agent/repo/continue",
        json={"fromAgentId": a_id, "proof": "A" * 43 + "=", "wrappedKey": "YWdl", "version": 1},
    )
    assert forged.status_code in (400, 403), forged.text

    done = b.run(
        "recovery",
        "continue",
        "--from-agent",
        a_id,
        "--recovery-code-stdin",
        "--json",
        stdin=code + "\n",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout) == {
        "fromAgentId": a_id,
        "fromAgentName": "old laptop",
        "snapshots": 2,
    }
    assert code not in done.stdout + done.stderr
    again = b.run(
        "recovery", "continue", "--from-agent", a_id, "--recovery-code-stdin", stdin=code + "\n"
    )
    assert again.returncode == 0, again.stderr  # idempotent
    assert api.get("/api/agent/inherited").json()["agents"][0]["continued"] is True

    # B's first snapshot of (nearly) the same files uploads only what differs.
    (src / "new on b.txt").write_text("written on the new laptop\n")
    owner.create_config(
        b_id, name="New", sources=[{"path": str(src)}], options={"type": "incremental"}
    )
    b_done = snapshot_of(b.run("run", "--json"))
    b_snap = str(b_done["logId"])
    expected_b = snapshot(src)
    backups = {x["id"]: x for x in owner.backups()}
    a_new, b_new = backups[a_snap]["newBytes"], backups[b_snap]["newBytes"]
    assert a_new > 6 * MIB, a_new
    assert b_new < a_new * 0.05 and b_new < 300_000, (a_new, b_new)
    # The objects stay under the old machine's prefix; nothing went under B's.
    listing = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert any(f"/agents/{a_id}/repo/snapshots/{b_snap}" in k for k in keys), keys
    assert not any(f"/agents/{b_id}/repo/" in k and "/meta/" not in k for k in keys), keys

    # The old machine, if it comes back, can no longer add to the repository.
    came_back = a.run("run", "--json")
    assert came_back.returncode != 0
    assert "continued by the machine that replaces it" in came_back.stderr + came_back.stdout

    # Both snapshots restore exactly on B (A's with the key continue stored: no code needed).
    for snap, expected in ((a_snap, expected_a), (b_snap, expected_b)):
        out = tmp_path / f"restored-{snap}"
        done = b.run("restore", snap, "--to", str(out))
        assert done.returncode == 0, done.stderr + done.stdout
        assert snapshot(extracted_root(out, src)) == expected

    # Retention expires A's snapshot; pruning removes only the pack B does not use.
    with sqlite3.connect(server.data_dir / "backapp.sqlite3") as con:
        con.execute(
            "UPDATE backapp_backup_log SET started_at = ?, completed_at = ? WHERE id = ?",
            ("2026-01-10 09:00:00+00:00", "2026-01-10 09:05:00+00:00", a_snap),
        )
        con.execute(
            "UPDATE backapp_backup_config"
            " SET retention_due_at = NULL, alert_due_at = NULL, revision = revision + 1"
        )
    r = owner.request(
        "PATCH",
        f"/api/configs/{a_cfg['id']}",
        json={"options": {"type": "incremental", "retentionDays": 1}},
    )
    assert r.status_code == 200, r.text
    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["expired"] == [a_snap], report
    # Its snapshot object goes (from the old machine's prefix, where it is); the packs stay:
    # every one also holds data that A's second snapshot or B's snapshot uses.
    assert {(d["kind"], d["name"]) for d in report["deleted"]} == {("snapshot", a_snap)}, report
    listing = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert not any(k.endswith(f"/agents/{a_id}/repo/snapshots/{a_snap}") for k in keys)
    for snap, expected in ((a_snap2, expected_a2), (b_snap, expected_b)):
        out = tmp_path / f"after-prune-{snap}"
        done = b.run("restore", snap, "--to", str(out))
        assert done.returncode == 0, done.stderr + done.stdout
        assert snapshot(extracted_root(out, src)) == expected

    # The database is lost and rebuilt from the bucket alone: the repository comes back as B's,
    # under A's prefix; B restores its snapshot and goes on; A still cannot add to it.
    server.stop()
    for path in server.data_dir.glob("backapp.sqlite3*"):
        path.unlink()
    rebuilt = backapp(server, "catalog", "rebuild", "--from-bucket", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr + rebuilt.stdout
    assert json.loads(rebuilt.stdout)["failed"] == []
    server = live_server_factory.start(
        s3=s3_server,
        bucket=s3_bucket,
        data_dir=server.data_dir,
        port=urlsplit(server.url).port,
        env={"BACKAPP_TASK_INTERVAL": "3600"},
    )
    with sqlite3.connect(server.data_dir / "backapp.sqlite3") as con:
        rows = con.execute("SELECT agent, prefix_agent FROM backapp_repository").fetchall()
    assert [tuple(str(uuid.UUID(str(x))) for x in row) for row in rows] == [(b_id, a_id)], rows
    out = tmp_path / "b-after-rebuild"
    done = b.run("restore", b_snap, "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == expected_b
    (src / "after the rebuild.txt").write_text("later\n")
    snapshot_of(b.run("run", "--json"))
    came_back = a.run("run", "--json")
    assert "continued by the machine that replaces it" in came_back.stderr + came_back.stdout
