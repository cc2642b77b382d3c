"""End to end: ``backapp-agent check`` and restore drills, with a real ``backapp serve``, a real S3
endpoint on loopback (moto) and the real ``backapp-agent`` command line.

A clean repository passes ``check --read-data 100`` and a drill; then one byte of the data pack is
flipped behind everyone's back: ``check --read-data 100`` finds it (exit 1, the pack and the blob
named), the server records it, the config's page shows it and a ``data_check`` alert opens. Then
the pack is removed: a drill fails, its page says so, a ``drill_failed`` alert opens, and the
dashboard still says when the config was last proven restorable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.agent_process import Agent, events_of, setup
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import MIB, random_file

pytestmark = [pytest.mark.e2e]


def _packs(s3: S3Endpoint, bucket: str) -> dict[str, int]:
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if "/repo/data/" in obj["Key"]:
                out[obj["Key"]] = int(obj["Size"])
    return out


def test_check_finds_a_flipped_byte_and_drills_prove_or_fail(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for n in range(6):
        random_file(src / f"part-{n}.bin", MIB // 2 + n * 1000, seed=n)
    (src / "notes" / "todo.txt").parent.mkdir(parents=True)
    (src / "notes" / "todo.txt").write_text("check the backups\n" * 100)
    (src / "empty.txt").write_bytes(b"")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner, _agent_id, key, [cfg] = setup(
        server,
        {
            "name": "Ledger",
            "sources": [{"path": str(src)}],
            "options": {"type": "incremental", "drill": {"every": "weekly", "sample": 5}},
        },
    )
    assert cfg["options"]["drill"] == {"every": "weekly", "sample": 5}
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))
    done = agent.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    [finished] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
    backup_id = finished["logId"]

    # A clean repository: the structure and every byte check out.
    clean = agent.run("check", "--read-data", "100", "--json")
    assert clean.returncode == 0, clean.stderr + clean.stdout
    report = json.loads(clean.stdout)
    assert report["ok"] is True and report["reported"] is True
    [result] = report["results"]
    assert result["configId"] == cfg["id"] and result["backupId"] == backup_id
    assert result["problems"] == [] and result["packs"] >= 2  # a data pack and a tree pack
    assert result["packsRead"] == result["packs"] and result["blobs"] >= 7
    page = owner.request("GET", f"/configs/{cfg['id']}").text
    assert "Last check" in page and "No problems" in page and "100%" in page

    # A drill that passes: five files restored and verified, the projection in words.
    drill = agent.run("drill", "--config", cfg["id"], "--json")
    assert drill.returncode == 0, drill.stderr + drill.stdout
    passed = json.loads(drill.stdout)
    assert passed["ok"] is True and passed["sample"] == 5 and passed["files"] == 5
    assert passed["timeToFirstByte"] is not None and passed["projectedSeconds"] is not None
    assert passed["snapshotBytes"] > 3 * MIB
    assert not list((tmp_path / "agent-tmp").glob("backapp-drill-*")), "the drill cleans up"
    dashboard = owner.request("GET", "/").text
    assert "Last proven restorable" in dashboard and "full restore ≈" in dashboard
    assert "bytes" not in dashboard.split("Last proven restorable")[1].split("<")[0]
    page = owner.request("GET", f"/configs/{cfg['id']}").text
    assert "Restore drill" in page and "5 of 5 sampled files" in page

    # One byte of the data pack flips in storage: sizes and listings cannot see it...
    s3 = s3_server.client()
    packs = _packs(s3_server, s3_bucket)
    victim = max(packs, key=lambda k: packs[k])
    data = bytearray(s3.get_object(Bucket=s3_bucket, Key=victim)["Body"].read())
    data[len(data) // 3] ^= 0x01
    s3.put_object(Bucket=s3_bucket, Key=victim, Body=bytes(data))
    structure = agent.run("check", "--json")
    assert structure.returncode == 0, structure.stderr + structure.stdout

    # ...reading the data back does.
    bad = agent.run("check", "--read-data", "100", "--json")
    assert bad.returncode == 1, bad.stderr + bad.stdout
    found = json.loads(bad.stdout)
    assert found["ok"] is False
    kinds = {(p["kind"], p["name"]) for p in found["results"][0]["problems"]}
    pack_name = victim.rsplit("/", 1)[1]
    assert ("damaged_pack", pack_name) in kinds
    assert any(kind == "damaged_blob" for kind, _ in kinds), kinds
    human = agent.run("check", "--read-data", "100")
    assert human.returncode == 1
    assert "pack damaged" in human.stdout and pack_name[:16] in human.stdout
    assert str(src).lstrip("/") in human.stdout  # the affected files, on this machine only
    assert "reading packs: 2 of 2" in human.stderr  # progress on stderr, not in the output
    alerts = owner.request("GET", "/api/alerts").json()["alerts"]
    [alert] = [a for a in alerts if a["kind"] == "data_check"]
    assert alert["subject"] == f"config:{cfg['id']}" and "Ledger" in alert["message"]
    assert str(src) not in alert["message"]
    page = owner.request("GET", f"/configs/{cfg['id']}").text
    assert "problem" in page and pack_name[:16] in page

    # The pack is removed: a drill fails, and says why.
    s3.delete_object(Bucket=s3_bucket, Key=victim)
    failed = agent.run("drill", "--config", cfg["id"], "--json")
    assert failed.returncode == 1, failed.stderr + failed.stdout
    result = json.loads(failed.stdout)
    assert result["ok"] is False and result["files"] < result["sample"]
    assert "missing from storage" in result["error"], result
    alerts = owner.request("GET", "/api/alerts").json()["alerts"]
    [alert] = [a for a in alerts if a["kind"] == "drill_failed"]
    assert alert["subject"] == f"config:{cfg['id']}" and "missing from storage" in alert["message"]
    page = owner.request("GET", f"/configs/{cfg['id']}").text
    assert "Failed:" in page and "missing from storage" in page
    dashboard = owner.request("GET", "/").text
    assert "Last proven restorable" in dashboard  # when it last was, though the drill now fails
    assert "drill failed" in dashboard
    human = agent.run("drill", "--config", cfg["id"])
    assert human.returncode == 1 and "FAILED" in human.stdout


def test_check_and_drill_refuse_a_full_config(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    server = live_server_factory.start()
    _owner, _agent_id, key, [full] = setup(
        server, {"name": "Archive", "sources": [{"path": str(tmp_path)}]}
    )
    agent = Agent(tmp_path, server.url, key)
    for args in (("drill", "--config", full["id"]), ("check", "--config", full["id"])):
        done = agent.run(*args)
        assert done.returncode == 1, done.stderr + done.stdout
        assert "full archives" in done.stderr
    done = agent.run("check", "--read-data", "150")
    assert done.returncode == 2 and "0 to 100" in done.stderr
    api = server.agent_client(key)
    r = api.post(
        "/api/agent/drill",
        json={
            "configId": full["id"],
            "backupId": full["id"],
            "ok": True,
            "sample": 1,
            "files": 1,
            "bytes": 1,
            "duration": 1,
        },
    )
    assert r.status_code == 400 and "full" in r.json()["detail"], r.text
