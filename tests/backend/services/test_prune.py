"""Pruning snapshot repositories (backend/services/prune.py) against a real S3 endpoint on loopback
(moto), on SQLite and PostgreSQL: exactly the packs no live snapshot needs are deleted; a running
snapshot, one that starts in the middle of a round, a storage error and an interrupted round never
lose a pack that is needed; packs of failed runs wait out the grace period; retention policies
with bad numbers are refused."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from backend.backups.tables import Alert, BackupLog
from backend.repos.tables import RepoObject
from backend.services import Services
from backend.services.checks import CheckService
from backend.services.clock import utcnow
from backend.services.prune import PruneService
from backend.storage import S3Storage
from desktop_agent.engine.repo_protocol import decode_bitmap, encode_bitmap
from tests.support.api import ApiClient
from tests.support.repos import data_keys, expire, name, new_repo, pack, state
from tests.support.s3 import S3Endpoint, s3_storage


async def test_only_packs_no_live_snapshot_needs_are_deleted(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    p1, p2, p3 = pack(), pack(), pack()
    a = await repo.snapshot([p1, p2])
    b = await repo.snapshot([p3], reuse=[p2])
    assert data_keys(s3_server, s3_bucket) == {name(p1), name(p2), name(p3)}

    nothing = await services.tasks.prune.run()
    assert nothing.packs == 0 and nothing.deleted == []

    await expire(a)
    report = await services.tasks.prune.run()
    assert [d["name"] for d in report.deleted if d["kind"] == "data"] == [name(p1)]
    assert report.bytes_freed == len(p1) + len(b"snapshot " + a.encode())
    assert data_keys(s3_server, s3_bucket) == {name(p2), name(p3)}
    assert [await state(p) for p in (p1, p2, p3)] == ["deleted", "stored", "stored"]
    # The agent is told the pack is gone at its next start.
    started = await repo.start()
    assert decode_bitmap(started["repository"]["livePacks"]) == {repo.seqs[p2], repo.seqs[p3]}

    # That snapshot is running: the repository waits; nothing else was unused anyway.
    again = await services.tasks.prune.run()
    assert again.deleted == [] and len(again.deferred) == 1
    await repo.fail(started["backupId"])
    assert (await services.tasks.prune.run()).deleted == []
    assert await state(p2) == "stored" and b


async def test_a_running_snapshot_defers_pruning_of_its_repository(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    old, kept = pack(), pack()
    a = await repo.snapshot([old])
    await repo.snapshot([kept])
    await expire(a)
    running = await repo.snapshot([pack()], complete=False)

    report = await services.tasks.prune.run()
    assert report.deleted == [] and len(report.deferred) == 1
    assert name(old) in data_keys(s3_server, s3_bucket)
    assert await state(old) == "stored"

    await repo.fail(running)
    report = await services.tasks.prune.run()
    assert name(old) in {d["name"] for d in report.deleted}
    assert name(old) not in data_keys(s3_server, s3_bucket)


async def test_a_snapshot_that_starts_during_the_round_keeps_every_pack(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    """The dangerous timing: a snapshot starts after the pruner saw no snapshot running but
    before it marked the packs, so the agent is told they are live and may reuse them."""
    client, services = s3_app
    repo = await new_repo(client)
    old = pack()
    a = await repo.snapshot([old])
    await repo.snapshot([pack()])
    await expire(a)
    started: list[dict[str, Any]] = []

    class Racing(PruneService):
        async def _snapshots(self, repo_ids: Sequence[Any]) -> list[dict[str, Any]]:
            if not started:
                started.append(await repo.start())
            return await super()._snapshots(repo_ids)

    report = await Racing(services.storage, grace_seconds=0).run()
    assert repo.seqs[old] in decode_bitmap(started[0]["repository"]["livePacks"])
    assert report.deleted == [] and report.deferred
    assert name(old) in data_keys(s3_server, s3_bucket)
    assert await state(old) == "stored"  # the mark was undone
    # That snapshot reuses the pack and completes; the pack is live again and stays.
    backup_id = started[0]["backupId"]
    await repo.upload(backup_id, [("snapshot", backup_id, b"s")])
    r = await repo.post(
        "/api/agent/snapshot/complete",
        {"backupId": backup_id, "status": "completed", "packs": encode_bitmap([repo.seqs[old]])},
    )
    assert r.status_code == 200, r.text
    await repo.release(backup_id)
    after = await services.tasks.prune.run()
    assert name(old) not in {d["name"] for d in after.deleted}
    assert name(old) in data_keys(s3_server, s3_bucket)


async def test_an_interrupted_round_is_finished_or_undone_by_the_next(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    unused, needed = pack(), pack()
    a = await repo.snapshot([unused])
    await repo.snapshot([needed])
    await expire(a)
    # A round that died after marking: one unused pack, and one a snapshot went on to need.
    await RepoObject.update({RepoObject.state: "deleting"}).where(
        RepoObject.name.is_in([name(unused), name(needed)])
    )
    # Neither is offered to a new snapshot as live, nor handed out again.
    started = await repo.start()
    assert decode_bitmap(started["repository"]["livePacks"]) == set()
    r = await repo.post(
        "/api/agent/snapshot/objects",
        {
            "backupId": started["backupId"],
            "objects": [
                {"kind": "data", "name": name(needed), "size": 1000, "sha256": name(needed)}
            ],
        },
    )
    assert r.status_code == 409 and "pruned" in r.json()["detail"]
    await repo.fail(started["backupId"])

    report = await services.tasks.prune.run()
    assert {d["name"] for d in report.deleted if d["kind"] == "data"} == {name(unused)}
    assert await state(needed) == "stored" and await state(unused) == "deleted"
    assert data_keys(s3_server, s3_bucket) == {name(needed)}


async def test_a_storage_error_leaves_the_rows_for_the_next_round(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    old = pack()
    a = await repo.snapshot([old])
    await repo.snapshot([pack()])
    await expire(a)
    unreachable = S3Storage(
        bucket=s3_bucket,
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="testing",
        secret_access_key="testing",
    )
    report = await PruneService(unreachable).run()
    assert report.deleted == [] and report.failed
    assert await state(old) == "stored"
    report = await PruneService(s3_storage(s3_server, s3_bucket)).run()
    assert name(old) in {d["name"] for d in report.deleted}
    assert await state(old) == "deleted"


async def test_packs_of_a_failed_run_wait_out_the_grace_period(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    await repo.snapshot([pack()])
    orphan = pack()
    failed = await repo.snapshot([orphan], complete=False)
    await repo.fail(failed)
    prune = PruneService(services.storage, grace_seconds=3600)
    assert (await prune.run()).deleted == []
    report = await prune.run(now=utcnow() + timedelta(hours=2))
    assert [d["name"] for d in report.deleted] == [name(orphan)]


async def test_retention_expires_snapshots_and_the_same_round_prunes_them(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client, retention={"keepLast": 1})
    first, second = pack(), pack()
    a = await repo.snapshot([first])
    b = await repo.snapshot([second])
    report = await services.tasks.run_maintenance()
    assert report is not None
    assert report.retention.expired == [a] and report.retention.snapshots == [a]
    assert {d["name"] for d in report.prune.deleted} == {name(first), a}
    assert data_keys(s3_server, s3_bucket) == {name(second)}
    row = await BackupLog.select(BackupLog.status).where(BackupLog.id == uuid.UUID(b)).first()
    assert row is not None and row["status"] == "completed"


@pytest.mark.parametrize(
    ("retention", "needle"),
    [
        ({"keepLast": -1}, "keepLast"),
        ({"keepDaily": 10001}, "keepDaily"),
        ({"keepForever": 3}, "keepForever"),
        ({"keepWeekly": "three"}, "keepWeekly"),
        ({"keepMonthly": 2.5}, "keepMonthly"),
    ],
)
async def test_bad_retention_numbers_are_refused(
    s3_app: tuple[ApiClient, Services], retention: dict[str, Any], needle: str
) -> None:
    client, _services = s3_app
    await client.signup()
    agent_id, _key = await client.register_agent()
    r = await client.post(
        "/api/configs",
        json={
            "name": "x",
            "executionMode": "agent",
            "agentId": agent_id,
            "sources": [{"path": "/data"}],
            "options": {"retention": retention},
        },
    )
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"] and "retention" in r.json()["detail"]
    config = await client.create_config(agent_id)
    r = await client.patch(
        f"/api/configs/{config['id']}", json={"options": {"retention": retention}}
    )
    assert r.status_code == 400 and needle in r.json()["detail"], r.text
    shown = await client.get(f"/api/configs/{config['id']}")
    assert shown.json()["config"]["options"]["retention"] is None


async def test_check_reports_missing_and_resized_packs_and_alerts_until_they_are_back(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    shared, lost, changed = pack(), pack(), pack()
    a = await repo.snapshot([shared, lost])
    b = await repo.snapshot([changed], reuse=[shared])
    check = CheckService(services.storage)
    clean = await check.run()
    assert clean.problems == [] and clean.snapshots == 2 and clean.packs == 3

    s3 = s3_server.client()
    keys = {
        o["Key"].rsplit("/", 1)[1]: o["Key"]
        for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]
    }
    s3.delete_object(Bucket=s3_bucket, Key=keys[name(lost)])
    s3.put_object(Bucket=s3_bucket, Key=keys[name(changed)], Body=changed + b"x")
    report = await check.run()
    by_backup = {p.backup_id: p for p in report.problems}
    assert set(by_backup) == {a, b}
    assert [o["name"] for o in by_backup[a].objects] == [name(lost)]
    assert by_backup[b].objects[0]["found"] == len(changed) + 1
    assert "missing" in by_backup[a].message and "another size" in by_backup[b].message
    assert report.alerts_opened == 1
    # The alert rounds leave it open; a second check does not open another.
    await services.alerts.evaluate()
    assert (await check.run()).alerts_opened == 0
    assert (
        await Alert.count().where((Alert.kind == "storage_check") & Alert.resolved_at.is_null())
        == 1
    )

    s3.put_object(Bucket=s3_bucket, Key=keys[name(lost)], Body=lost)
    s3.put_object(Bucket=s3_bucket, Key=keys[name(changed)], Body=changed)
    healed = await check.run()
    assert healed.problems == [] and healed.alerts_resolved == 1
