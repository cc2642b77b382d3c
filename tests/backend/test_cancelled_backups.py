"""A backup the user stopped is ``cancelled``: not a failure. The server records it as such (and
aborts its multipart upload), raises no alert, and the dashboard does not call the config failing
(SQLite and PostgreSQL, through the real ASGI app)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from backend.backups.tables import Alert, BackupLog
from backend.services import Services
from backend.services.clock import utcnow
from tests.support.api import ApiClient, complete_one_backup


async def _cancel_one(client: ApiClient, key: str, config_id: str) -> str:
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {
            "configId": config_id,
            "filename": f"b-{uuid.uuid4().hex[:8]}.tar.gz",
            "filesize": 64 << 20,
            "multipart": True,
        },
    )
    assert start.status_code == 200, start.text
    log_id = start.json()["logId"]
    body = {
        "logId": log_id,
        "status": "cancelled",
        "filesProcessed": 3,
        "bytesTransferred": 0,
        "error": "cancelled by the user",
    }
    done = await client.agent_post(key, "/api/agent/backup/complete", body)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "cancelled"
    again = await client.agent_post(key, "/api/agent/backup/complete", body)  # a retried call
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    return str(log_id)


async def test_the_server_says_it_knows_cancelled(client: ApiClient) -> None:
    await client.signup()
    _agent_id, key = await client.register_agent()
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "0.1.0"})
    assert "backup-cancelled" in beat.json()["features"]


async def test_a_cancel_is_recorded_as_cancelled_and_its_upload_aborted(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id)
    log_id = await _cancel_one(client, key, config["id"])

    row = await BackupLog.select().where(BackupLog.id == uuid.UUID(log_id)).first()
    assert row is not None
    assert (row["status"], row["error"], row["upload_state"]) == (
        "cancelled",
        "cancelled by the user",
        "aborted",
    )
    listed = (await client.get("/api/backups", params={"status": "cancelled"})).json()["backups"]
    assert [b["id"] for b in listed] == [log_id]
    assert (await client.get("/api/backups", params={"status": "failed"})).json()["backups"] == []
    totals = await client.get(f"/api/backups/{log_id}")
    assert totals.json()["backup"]["status"] == "cancelled"
    # A cancel is not the agent's failure: the agent is online, not "error".
    await client.agent_post(key, "/api/agent/heartbeat", {"version": "0.1.0"})
    agent = (await client.get(f"/api/agents/{agent_id}")).json()["agent"]
    assert agent["status"] == "online"


async def test_a_cancel_raises_no_alert_and_the_dashboard_stays_calm(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id, name="Documents")
    await client.agent_post(key, "/api/agent/heartbeat", {"version": "0.1.0"})
    await complete_one_backup(client, key, config["id"])
    await _cancel_one(client, key, config["id"])

    await services.alerts.evaluate(utcnow() + timedelta(minutes=1))
    assert await Alert.select().where(Alert.kind == "backup_failed") == []

    page = await client.get("/")
    assert page.status_code == 200
    assert "Some backups are failing" not in page.text
    assert "All backups are up to date" in page.text  # the last good backup is minutes old
    assert 'data-status="cancelled"' in page.text
    assert 'data-state="failing"' not in page.text


async def test_one_failed_config_does_not_make_the_agent_error(client: ApiClient) -> None:
    """Agent status is about the agent; a config's problem shows on the config."""
    await client.signup()
    agent_id, key = await client.register_agent()
    good = await client.create_config(agent_id, name="Photos")
    bad = await client.create_config(agent_id, name="Documents")
    await complete_one_backup(client, key, good["id"])
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": bad["id"], "filename": "b-1.tar.gz", "filesize": 3},
    )
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start.json()["logId"], "status": "failed", "error": "disk on fire"},
    )
    assert done.status_code == 200, done.text
    await client.agent_post(key, "/api/agent/heartbeat", {"version": "0.1.0"})
    agent = (await client.get(f"/api/agents/{agent_id}")).json()["agent"]
    assert agent["status"] == "online"
    page = await client.get("/")
    assert 'data-state="failing"' in page.text  # the config shows it
    assert 'data-status="error"' not in page.text


async def test_a_cancelled_snapshot_is_cancelled_and_a_stopped_one_failed(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id, options={"type": "incremental"})
    statuses = []
    for cancelled in (True, False):
        start = await client.agent_post(
            key, "/api/agent/snapshot/start", {"configId": config["id"]}
        )
        assert start.status_code == 200, start.text
        backup_id = start.json()["backupId"]
        lease = start.json()["lease"]
        body = {"backupId": backup_id, "reason": "stopped", "cancelled": cancelled}
        done = await client.agent_post(key, "/api/agent/snapshot/abort", body)
        assert done.status_code == 200, done.text
        got = await client.get(f"/api/backups/{backup_id}")
        statuses.append(got.json()["backup"]["status"])
        await client.agent_post(
            key, "/api/agent/lease/release", {"configId": config["id"], "token": lease["token"]}
        )
    assert statuses == ["cancelled", "failed"]
    await services.alerts.evaluate(utcnow() + timedelta(minutes=1))
    # Only the stopped one is a failure worth an alert.
    alerts = await Alert.select(Alert.kind).where(Alert.kind == "backup_failed")
    assert len(alerts) == 1
