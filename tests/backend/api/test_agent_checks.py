"""Restore drills and agent checks through the real ASGI app: ``options.drill`` validated, the
reports (``POST /api/agent/drill``, ``POST /api/agent/repo/check``) refused precisely when bad,
recorded per config, and their alerts opened and resolved; ``drill_overdue`` from the alert round
(SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from backend.backups.tables import Alert, BackupConfig, BackupLog
from backend.services import Services
from backend.services.clock import utcnow
from tests.support.api import ApiClient

DRILL = {"every": "weekly", "sample": 5}


async def _snapshot(config: dict[str, Any], agent_id: str, user_id: Any) -> str:
    """A completed snapshot row of the config (what the agent's drill reports about)."""
    backup_id = uuid.uuid4()
    await BackupLog.insert(
        BackupLog(
            id=backup_id,
            user=user_id,
            config=uuid.UUID(config["id"]),
            agent=uuid.UUID(agent_id),
            config_name=config["name"],
            status="completed",
            s3_path=f"users/x/agents/{agent_id}/repo/snapshots/{backup_id}",
            filename="snapshot",
            started_at=utcnow(),
            completed_at=utcnow(),
            backup_type="incremental",
        )
    )
    return str(backup_id)


async def _setup(client: ApiClient) -> tuple[str, str, dict[str, Any], str]:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(
        agent_id, name="Ledger", options={"type": "incremental", "drill": DRILL}
    )
    row = await BackupConfig.select(BackupConfig.user).where(
        BackupConfig.id == uuid.UUID(config["id"])
    )
    backup_id = await _snapshot(config, agent_id, row[0]["user"])
    return agent_id, key, config, backup_id


async def open_alerts(kind: str) -> list[dict[str, Any]]:
    return [r for r in await Alert.select().where(Alert.resolved_at.is_null()) if r["kind"] == kind]


@pytest.mark.parametrize(
    ("drill", "says"),
    [
        ({"every": "hourly", "sample": 5}, "every"),
        ({"every": "weekly", "sample": 0}, "sample"),
        ({"every": "weekly", "sample": 1001}, "sample"),
        ({"every": "weekly", "sample": "ten"}, "sample"),
        ({"sample": 5}, "every"),
        ({"every": "weekly", "when": "night"}, "when"),
        ("weekly", "drill"),
    ],
)
async def test_bad_drill_options_are_refused_precisely(
    client: ApiClient, drill: Any, says: str
) -> None:
    await client.signup()
    agent_id, _ = await client.register_agent()
    r = await client.post(
        "/api/configs",
        json={
            "name": "x",
            "agentId": agent_id,
            "sources": [{"path": "/a"}],
            "options": {"type": "incremental", "drill": drill},
        },
    )
    assert r.status_code == 400, r.text
    assert says in r.json()["detail"] and "drill" in r.json()["detail"], r.text
    assert await BackupConfig.count() == 0


async def test_a_drill_on_a_full_config_is_refused(client: ApiClient) -> None:
    await client.signup()
    agent_id, _ = await client.register_agent()
    r = await client.post(
        "/api/configs",
        json={
            "name": "x",
            "agentId": agent_id,
            "sources": [{"path": "/a"}],
            "options": {"drill": DRILL},
        },
    )
    assert r.status_code == 400 and r.json()["field"] == "drill", r.text
    assert "full" in r.json()["detail"] and "incremental" in r.json()["detail"]
    full = await client.create_config(agent_id, name="Archive")
    r = await client.patch(f"/api/configs/{full['id']}", json={"options": {"drill": DRILL}})
    assert r.status_code == 400 and r.json()["field"] == "drill", r.text
    inc = await client.create_config(
        agent_id, name="Snap", options={"type": "incremental", "drill": DRILL}
    )
    # Turning a drilled config into a full one would leave a drill nobody can run.
    r = await client.patch(f"/api/configs/{inc['id']}", json={"options": {"type": "full"}})
    assert r.status_code == 400 and r.json()["field"] == "drill", r.text
    r = await client.patch(
        f"/api/configs/{inc['id']}", json={"options": {"type": "full", "drill": None}}
    )
    assert r.status_code == 200 and r.json()["config"]["options"]["drill"] is None, r.text


async def test_the_agent_gets_the_drill_options(client: ApiClient) -> None:
    _agent_id, key, config, _ = await _setup(client)
    r = await client.agent_get(key, "/api/agent/configs")
    [got] = [c for c in r.json()["configs"] if c["id"] == config["id"]]
    assert got["options"]["drill"] == DRILL


def _drill(config_id: str, backup_id: str, **over: Any) -> dict[str, Any]:
    body = {
        "configId": config_id,
        "backupId": backup_id,
        "ok": True,
        "sample": 5,
        "files": 5,
        "bytes": 5 * 1024 * 1024,
        "duration": 2300,
        "timeToFirstByte": 120,
        "throughput": 4 * 1024 * 1024,
        "snapshotBytes": 2 * 1024**3,
        "projectedSeconds": 512.0,
    }
    body.update(over)
    return body


async def test_drill_reports_alert_and_prove(client: ApiClient, services: Services) -> None:
    agent_id, key, config, backup_id = await _setup(client)
    cid = config["id"]
    # Refused precisely: another config's snapshot, a made-up one, absurd numbers.
    other = await client.create_config(agent_id, name="Other", options={"type": "incremental"})
    r = await client.agent_post(key, "/api/agent/drill", _drill(other["id"], backup_id))
    assert r.status_code == 404 and "backupId" in r.json()["detail"], r.text
    r = await client.agent_post(key, "/api/agent/drill", _drill(cid, str(uuid.uuid4())))
    assert r.status_code == 404, r.text
    r = await client.agent_post(key, "/api/agent/drill", _drill(cid, backup_id, files=-1))
    assert r.status_code == 400, r.text
    r = await client.agent_post(
        key,
        "/api/agent/drill",
        _drill(cid, backup_id, problems=[{"kind": "bogus", "message": "x"}]),
    )
    assert r.status_code == 400, r.text
    _, stranger_key = await client.register_agent("stranger")
    r = await client.agent_post(stranger_key, "/api/agent/drill", _drill(cid, backup_id))
    assert r.status_code == 404, r.text

    # A failed drill: recorded, alerted once.
    failed = _drill(
        cid,
        backup_id,
        ok=False,
        files=2,
        error="3 of 5 sampled files could not be restored exactly: pack 0123… is missing",
        problems=[{"kind": "restore_failed", "message": "pack 0123… is missing from storage"}],
    )
    r = await client.agent_post(key, "/api/agent/drill", failed)
    assert r.status_code == 200 and r.json()["summary"].startswith("Failed"), r.text
    await client.agent_post(key, "/api/agent/drill", failed)
    [alert] = await open_alerts("drill_failed")
    assert alert["subject"] == f"config:{cid}" and "Ledger" in alert["message"]
    row = await BackupConfig.select(BackupConfig.user).where(BackupConfig.id == uuid.UUID(cid))
    proofs = await services.checks.proofs(row[0]["user"], [cid])
    assert proofs[cid].drill_ok is False and proofs[cid].proven_at is None
    # The alert round leaves it alone (the reports own it).
    await services.alerts.evaluate(utcnow())
    assert len(await open_alerts("drill_failed")) == 1

    # A passing drill resolves it and proves the config restorable, in words.
    r = await client.agent_post(key, "/api/agent/drill", _drill(cid, backup_id))
    assert r.status_code == 200, r.text
    assert "5 of 5 sampled files" in r.json()["summary"]
    assert "about 9 minutes" in r.json()["summary"]
    assert await open_alerts("drill_failed") == []
    proofs = await services.checks.proofs(row[0]["user"], [cid])
    assert proofs[cid].drill_ok is True and proofs[cid].full_restore == "about 9 minutes"
    assert proofs[cid].proven_at is not None
    page = (await client.get("/")).text
    assert "Last proven restorable" in page and "full restore ≈ about 9 minutes" in page
    page = (await client.get(f"/configs/{cid}")).text
    assert "weekly, 5 files at random" in page and "5 of 5 sampled files" in page

    # A week and the default grace (60 min) later: overdue; a new drill resolves it.
    now = utcnow()
    await services.alerts.evaluate(now + timedelta(days=7, minutes=30))
    assert await open_alerts("drill_overdue") == []
    await services.alerts.evaluate(now + timedelta(days=7, minutes=90))
    [late] = await open_alerts("drill_overdue")
    assert late["subject"] == f"config:{cid}" and "weekly" in late["message"]
    r = await client.agent_post(key, "/api/agent/drill", _drill(cid, backup_id))
    assert await open_alerts("drill_overdue") == []


async def test_no_overdue_drill_before_the_first_snapshot(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    agent_id, _ = await client.register_agent()
    config = await client.create_config(
        agent_id, options={"type": "incremental", "drill": {"every": "daily"}}
    )
    assert config["options"]["drill"] == {"every": "daily", "sample": 20}
    await services.alerts.evaluate(utcnow() + timedelta(days=30))
    assert await open_alerts("drill_overdue") == []


async def test_check_reports_open_and_resolve_the_data_alert(
    client: ApiClient, services: Services
) -> None:
    _agent_id, key, config, backup_id = await _setup(client)
    cid = config["id"]
    result = {
        "configId": cid,
        "backupId": backup_id,
        "ok": True,
        "trees": 3,
        "blobs": 40,
        "packs": 2,
        "packsRead": 2,
        "bytesRead": 3 * 1024 * 1024,
    }
    for bad in (
        {"readData": 101, "duration": 5, "results": [result]},
        {"readData": 10, "duration": 5, "results": []},
        {"readData": 10, "duration": 5, "results": [{**result, "paths": ["/home"]}]},
        {
            "readData": 10,
            "duration": 5,
            "results": [
                {
                    **result,
                    "problems": [
                        {"kind": "damaged_pack", "name": "/home/me/secret.txt", "message": "x"}
                    ],
                }
            ],
        },
    ):
        r = await client.agent_post(key, "/api/agent/repo/check", bad)
        assert r.status_code == 400, (bad, r.text)
    damaged = {
        **result,
        "ok": False,
        "problems": [
            {
                "kind": "damaged_pack",
                "name": "ab" * 32,
                "message": f"pack {'ab' * 8}… is damaged: its bytes no longer match its name",
            }
        ],
    }
    r = await client.agent_post(
        key, "/api/agent/repo/check", {"readData": 100, "duration": 5, "results": [damaged]}
    )
    assert r.status_code == 200 and r.json()["alertsOpened"] == 1, r.text
    [alert] = await open_alerts("data_check")
    assert "Ledger" in alert["message"] and "ab" * 8 in alert["message"]
    page = (await client.get(f"/configs/{cid}")).text
    assert "1 problem found" in page and "100%" in page
    r = await client.agent_post(
        key, "/api/agent/repo/check", {"readData": 5, "duration": 5, "results": [result]}
    )
    assert r.status_code == 200 and r.json()["alertsOpened"] == 0
    assert await open_alerts("data_check") == []
    page = (await client.get(f"/configs/{cid}")).text
    assert "No problems" in page and "read 5% of the data" in page
