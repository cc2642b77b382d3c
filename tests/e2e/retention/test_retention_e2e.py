"""End to end: GFS retention, pruning and the storage check of snapshots, with a real ``backapp
serve``, a real S3 endpoint on loopback, the real ``backapp-agent`` and the real ``backapp
maintenance run`` / ``backapp check`` commands.

Five snapshots dated on a fake calendar, a policy that keeps three: the maintenance run removes
exactly the two others and the packs only they used (no more, no fewer bytes), and the three left
still restore exactly. Then a pack deleted behind the server's back is found by ``backapp check``,
which exits non-zero, names the config and the snapshot, and opens an alert.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.agent_process import Agent, events_of, setup
from tests.support.s3 import S3Endpoint, stored
from tests.support.server_process import LiveServer, LiveServerFactory, backapp
from tests.support.trees import MIB, extracted_root, random_file, snapshot

pytestmark = [pytest.mark.e2e]

# The fake calendar: three in March, one in February, one in January (oldest first).
DATES = [
    datetime(2026, 1, 10, 9, 0, tzinfo=UTC),
    datetime(2026, 2, 10, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 10, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 20, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 25, 9, 0, tzinfo=UTC),
]


def db(server: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "backapp.sqlite3")


def redate(server: LiveServer, backup_id: str, when: datetime) -> None:
    with db(server) as con:
        con.execute(
            "UPDATE backapp_backup_log SET started_at = ?, completed_at = ? WHERE id = ?",
            (str(when), str(when.replace(minute=5)), backup_id),
        )
        # Behind the server's back: its rounds must look at the config again, as after a backup.
        con.execute(
            "UPDATE backapp_backup_config"
            " SET retention_due_at = NULL, alert_due_at = NULL, revision = revision + 1"
        )


def pack_sets(server: LiveServer) -> dict[str, set[int]]:
    """Backup id → the pack sequence numbers its commit named (from the server's catalogue)."""
    with db(server) as con:
        rows = con.execute("SELECT backup, packs FROM backapp_snapshot").fetchall()
    out = {}
    for backup, packs in rows:
        bits = int.from_bytes(zlib.decompress(packs), "little") if packs else 0
        out[str(backup)] = {n for n in range(bits.bit_length()) if bits >> n & 1}
    return out


def pack_names(server: LiveServer) -> dict[int, tuple[str, int]]:
    with db(server) as con:
        rows = con.execute(
            "SELECT seq, name, size FROM backapp_repo_object WHERE kind = 'data'"
        ).fetchall()
    return {int(seq): (name, int(size)) for seq, name, size in rows}


def test_gfs_retention_prunes_exactly_the_unused_packs_and_check_finds_a_lost_one(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    random_file(src / "shared" / "base.bin", 3 * MIB, seed=100)
    (src / "notes.txt").write_text("kept in every snapshot\n")
    # A long task interval: only the start-up round runs; the command does the work.
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_TASK_INTERVAL": "3600"}
    )
    owner, _agent_id, key, [cfg] = setup(
        server,
        {
            "name": "Photos",
            "sources": [{"path": str(src)}],
            "options": {"type": "incremental", "retentionDays": 0},
        },
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))

    ids: list[str] = []
    states: list[dict[str, tuple[object, ...]]] = []
    for i in range(5):
        # Each snapshot has a file of its own (2 MiB that does not compress), gone in the next.
        if i:
            (src / f"only-{i - 1}.bin").unlink()
        random_file(src / f"only-{i}.bin", 2 * MIB, seed=i)
        done = agent.run("run", "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        [finished] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
        ids.append(finished["logId"])
        states.append(snapshot(src))
    for backup_id, when in zip(ids, DATES, strict=True):
        redate(server, backup_id, when)

    # Nothing to do yet: retentionDays 0 and no rule keep everything.
    first = backapp(server, "maintenance", "run", "--json")
    assert first.returncode == 0, first.stderr + first.stdout
    assert json.loads(first.stdout)["expired"] == []

    # Keep the newest backup of each of the last three months: Jan 10, Feb 10 and Mar 25.
    r = owner.request(
        "PATCH", f"/api/configs/{cfg['id']}", json={"options": {"retention": {"keepMonthly": 3}}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["config"]["options"]["retention"]["keepMonthly"] == 3
    kept, gone = [ids[0], ids[1], ids[4]], [ids[2], ids[3]]

    packs = pack_sets(server)
    names = pack_names(server)
    live = set().union(*(packs[i] for i in kept))
    only_gone = set().union(*(packs[i] for i in gone)) - live
    assert only_gone, "the expired snapshots had packs of their own"
    expected_bytes = sum(names[s][1] for s in only_gone)
    before = stored(s3_server, s3_bucket)

    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert sorted(report["expired"]) == sorted(gone)
    deleted_packs = {d["name"] for d in report["deleted"] if d["kind"] == "data"}
    assert deleted_packs == {names[s][0] for s in only_gone}
    assert {d["name"] for d in report["deleted"] if d["kind"] == "snapshot"} == set(gone)
    assert report["packs"] == len(only_gone)
    freed_packs = sum(d["size"] for d in report["deleted"] if d["kind"] == "data")
    assert freed_packs == expected_bytes
    assert expected_bytes >= 2 * 2 * MIB  # at least the two files only they had
    assert report["bytesFreed"] == sum(d["size"] for d in report["deleted"])

    after = stored(s3_server, s3_bucket)
    removed = set(before) - set(after)
    assert {k.rsplit("/", 1)[1] for k in removed} == {d["name"] for d in report["deleted"]}
    assert sum(before[k] for k in removed) == report["bytesFreed"]
    for seq in live:
        assert any(k.endswith(names[seq][0]) for k in after), seq

    statuses = {b["id"]: b["status"] for b in owner.backups()}
    assert [statuses[i] for i in ids] == [
        "completed",
        "completed",
        "expired",
        "expired",
        "completed",
    ]

    # A second run finds nothing more.
    again = backapp(server, "maintenance", "run", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["deleted"] == [] and json.loads(again.stdout)["expired"] == []

    # The three left restore exactly (with a fresh cache: everything read back from storage).
    fresh = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "fresh-cache"))
    for n in (0, 1, 4):
        out = tmp_path / f"restored-{n}"
        done = fresh.run("restore", ids[n], "--to", str(out))
        assert done.returncode == 0, done.stderr + done.stdout
        assert snapshot(extracted_root(out, src)) == states[n], n

    # The check finds everything in place...
    ok = backapp(server, "check", "--json")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    checked = json.loads(ok.stdout)
    assert checked["ok"] is True and checked["snapshots"] == 3 and checked["problems"] == []
    assert checked["packs"] == len(live)

    # ...until a pack only the newest snapshot uses disappears behind the server's back.
    newest_only = packs[ids[4]] - packs[ids[0]] - packs[ids[1]]
    victim = names[max(newest_only, key=lambda s: names[s][1])][0]
    [victim_key] = [k for k in after if k.endswith("/" + victim)]
    s3_server.client().delete_object(Bucket=s3_bucket, Key=victim_key)

    bad = backapp(server, "check", "--json")
    assert bad.returncode == 1, bad.stderr + bad.stdout
    found = json.loads(bad.stdout)
    assert found["ok"] is False
    [problem] = found["problems"]
    assert problem["configId"] == cfg["id"] and problem["configName"] == "Photos"
    assert problem["backupId"] == ids[4]
    assert [o["name"] for o in problem["objects"]] == [victim]
    assert victim[:12] in problem["message"] or "missing" in problem["message"]
    alerts = owner.request("GET", "/api/alerts").json()["alerts"]
    [alert] = [a for a in alerts if a["kind"] == "storage_check"]
    assert "Photos" in alert["message"]
    human = backapp(server, "check")
    assert human.returncode == 1
    assert "Photos" in human.stdout and ids[4] in human.stdout and cfg["id"] in human.stdout
