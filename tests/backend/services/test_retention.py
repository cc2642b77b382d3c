"""Retention against a real S3 endpoint on loopback (moto), on SQLite and PostgreSQL, with a
controllable clock: exactly the expired objects are deleted, the newest completed backup survives."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from backend.backups.tables import BackupLog
from backend.services import Services
from backend.services.retention import RetentionService, retention_days
from backend.storage import S3Storage
from tests.support.api import ApiClient
from tests.support.s3 import S3Endpoint

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def backup(
    client: ApiClient, key: str, config_id: str, name: str, payload: bytes, age_days: float
) -> str:
    """A real backup through the agent API and a PUT to S3, then dated ``age_days`` before NOW."""
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": name, "filesize": len(payload)},
    )
    assert start.status_code == 200, start.text
    upload = start.json()["upload"]
    async with httpx.AsyncClient() as http:
        put = await http.put(upload["url"], content=payload, headers=upload["headers"])
    assert put.status_code == 200, put.text
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start.json()["logId"], "status": "completed", "size": len(payload)},
    )
    assert done.status_code == 200, done.text
    log_id = start.json()["logId"]
    when = NOW - timedelta(days=age_days)
    await BackupLog.update(
        {BackupLog.started_at: when - timedelta(minutes=5), BackupLog.completed_at: when}
    ).where(BackupLog.id == uuid.UUID(log_id))
    return str(log_id)


def keys(endpoint: S3Endpoint, bucket: str) -> set[str]:
    """The backups' objects in the bucket (not the metadata objects beside them, which the
    catalog round writes and removes: tests/backend/services/test_catalog.py)."""
    listed = endpoint.client().list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in listed.get("Contents", []) if "/meta/" not in item["Key"]}


async def row(log_id: str) -> dict[str, Any]:
    found = await BackupLog.select().where(BackupLog.id == uuid.UUID(log_id)).first()
    assert found is not None
    return found


async def test_retention_deletes_exactly_the_expired_objects(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    await client.signup()
    agent_id, key = await client.register_agent()
    week = await client.create_config(agent_id, name="week", options={"retentionDays": 7})
    forever = await client.create_config(agent_id, name="forever", options={"retentionDays": 0})
    b = {
        "old1": await backup(client, key, week["id"], "old1.tar.gz", b"1" * 10, 30),
        "old2": await backup(client, key, week["id"], "old2.tar.gz", b"2" * 10, 8),
        "edge": await backup(client, key, week["id"], "edge.tar.gz", b"3" * 10, 6.9),
        "new": await backup(client, key, week["id"], "new.tar.gz", b"4" * 10, 1),
        "kept": await backup(client, key, forever["id"], "kept.tar.gz", b"5" * 10, 400),
    }
    # A failed backup's (stray) object is not retention's business.
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": week["id"], "filename": "failed.tar.gz", "filesize": 1},
    )
    await client.agent_post(
        key, "/api/agent/backup/complete", {"logId": start.json()["logId"], "status": "failed"}
    )
    await BackupLog.update({BackupLog.started_at: NOW - timedelta(days=90)}).where(
        BackupLog.id == uuid.UUID(start.json()["logId"])
    )
    before = keys(s3_server, s3_bucket)
    assert len(before) == 5

    report = await services.tasks.run_retention(now=NOW)
    assert report is not None
    assert sorted(report.expired) == sorted([b["old1"], b["old2"]]) and report.failed == []

    after = keys(s3_server, s3_bucket)
    gone = before - after
    assert gone == {(await row(b["old1"]))["s3_path"], (await row(b["old2"]))["s3_path"]}
    for name in ("old1", "old2"):
        expired = await row(b[name])
        assert expired["status"] == "expired"
        assert expired["deleted_at"] is not None
    for name in ("edge", "new", "kept"):
        assert (await row(b[name]))["status"] == "completed"
    assert (await row(start.json()["logId"]))["status"] == "failed"

    # The history shows it; downloads and restores refuse it.
    shown = await client.get(f"/api/backups/{b['old1']}")
    assert shown.json()["backup"]["status"] == "expired"
    assert shown.json()["backup"]["deletedAt"] is not None
    download = await client.get(f"/api/backups/{b['old1']}/download")
    assert download.status_code == 409 and "expired" in download.json()["detail"]
    restore = await client.agent_post(key, "/api/agent/restore", {"backupId": b["old1"]})
    assert restore.status_code == 409
    listed = await client.agent_get(key, "/api/agent/backups")
    assert b["old1"] not in {x["id"] for x in listed.json()["backups"]}

    # A second pass finds nothing more to do.
    again = await services.tasks.run_retention(now=NOW)
    assert again is not None and again.expired == []


async def test_the_newest_completed_backup_is_never_deleted(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id, options={"retentionDays": 7})
    older = await backup(client, key, config["id"], "a.tar.gz", b"a", 100)
    newest = await backup(client, key, config["id"], "b.tar.gz", b"b", 50)
    # A newer failed backup does not count as "the newest completed".
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config["id"], "filename": "c.tar.gz", "filesize": 1},
    )
    await client.agent_post(
        key, "/api/agent/backup/complete", {"logId": start.json()["logId"], "status": "failed"}
    )

    report = await services.tasks.run_retention(now=NOW)
    assert report is not None and report.expired == [older]
    assert (await row(newest))["status"] == "completed"
    assert keys(s3_server, s3_bucket) == {(await row(newest))["s3_path"]}


async def test_a_storage_failure_leaves_the_row_for_the_next_round(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id, options={"retentionDays": 1})
    old = await backup(client, key, config["id"], "a.tar.gz", b"a", 10)
    await backup(client, key, config["id"], "b.tar.gz", b"b", 0)

    # The same bucket through an endpoint that refuses the connection (nothing listens there).
    unreachable = S3Storage(
        bucket=s3_bucket,
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="testing",
        secret_access_key="testing",
    )
    report = await RetentionService(unreachable).run(now=NOW)
    assert report.expired == [] and [r[0] for r in report.failed] == [old]
    assert (await row(old))["status"] == "completed"
    assert len(keys(s3_server, s3_bucket)) == 2

    report = await RetentionService(services.storage).run(now=NOW)
    assert report.expired == [old]
    assert (await row(old))["status"] == "expired"


def test_retention_days_reading() -> None:
    assert retention_days({"retentionDays": 30}) == 30
    assert retention_days('{"retentionDays": 5}') == 5
    assert retention_days({"retentionDays": 0}) is None
    assert retention_days({"retentionDays": True}) is None
    assert retention_days({}) is None
    assert retention_days("not json") is None


# --- backapp s3 lifecycle ----------------------------------------------------------------------


def test_lifecycle_prints_the_spec_rules_without_expiration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from backend.cli import main

    assert main(["s3", "lifecycle"]) == 0
    out, err = capsys.readouterr()
    rules = json.loads(out)["Rules"]
    assert rules == [
        {
            "ID": "archive-old-backups",
            "Status": "Enabled",
            "Filter": {"Prefix": "users/"},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
            "Transitions": [
                {"Days": 30, "StorageClass": "GLACIER_IR"},
                {"Days": 90, "StorageClass": "GLACIER"},
            ],
        }
    ]
    assert "Expiration" not in out and "warning" not in err


def test_lifecycle_expiration_warns(capsys: pytest.CaptureFixture[str]) -> None:
    from backend.cli import main

    assert main(["s3", "lifecycle", "--expire-days", "400", "--glacier-days", "0"]) == 0
    out, err = capsys.readouterr()
    rule = json.loads(out)["Rules"][0]
    assert rule["Expiration"] == {"Days": 400}
    assert rule["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}]
    assert "newest completed backup" in err

    assert main(["s3", "lifecycle", "--expire-days", "60"]) == 2
    assert "more than the last transition" in capsys.readouterr().err
    assert main(["s3", "lifecycle", "--glacier-ir-days", "90", "--glacier-days", "30"]) == 2


def test_lifecycle_apply_needs_a_bucket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.cli import main

    monkeypatch.delenv("AWS_S3_BUCKET", raising=False)
    monkeypatch.setenv("BACKAPP_SECRET_KEY", "x" * 32)
    assert main(["s3", "lifecycle", "--apply"]) == 2
    assert "no S3 bucket is configured" in capsys.readouterr().err


def test_lifecycle_apply_against_s3(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    s3_server: S3Endpoint,
    s3_bucket: str,
) -> None:
    from backend.cli import main

    monkeypatch.setenv("BACKAPP_SECRET_KEY", "x" * 32)
    monkeypatch.setenv("AWS_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("AWS_S3_ENDPOINT", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    assert main(["s3", "lifecycle", "--apply", "--glacier-ir-days", "14"]) == 0
    assert f"applied to bucket {s3_bucket}" in capsys.readouterr().err
    applied = s3_server.client().get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert len(applied) == 1
    rule = applied[0]
    assert rule["ID"] == "archive-old-backups" and rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": "users/"}
    assert rule["Transitions"] == [
        {"Days": 14, "StorageClass": "GLACIER_IR"},
        {"Days": 90, "StorageClass": "GLACIER"},
    ]
    assert "Expiration" not in rule

    # A bucket that does not exist: a clear error, not a traceback.
    monkeypatch.setenv("AWS_S3_BUCKET", "no-such-bucket-here")
    assert main(["s3", "lifecycle", "--apply"]) == 1
    assert "could not apply the lifecycle rules" in capsys.readouterr().err
