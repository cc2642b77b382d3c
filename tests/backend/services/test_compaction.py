"""Compaction on the server (backend/services/compaction.py) with pruning, against a real S3
endpoint on loopback (moto), on SQLite and PostgreSQL: the round asks, a commit retires exactly the
replaced packs, pruning keeps them for the grace window and then deletes them, never while a
compaction runs; a retired pack that a snapshot names again is put back."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from typing import Any

from backend.repos.tables import Compaction, Repository
from backend.services import Services
from backend.services.clock import utcnow
from desktop_agent.engine.repo_protocol import encode_bitmap
from tests.support.api import ApiClient
from tests.support.repos import Repo, data_keys, expire, name, new_repo, pack, state
from tests.support.s3 import S3Endpoint


async def compact_start(repo: Repo) -> dict[str, Any]:
    r = await repo.post("/api/agent/repo/compact/start", {})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def compact_upload(repo: Repo, cid: str, data: bytes) -> int:
    import httpx

    body = [{"kind": "data", "name": name(data), "size": len(data), "sha256": name(data)}]
    r = await repo.post("/api/agent/repo/compact/objects", {"compactionId": cid, "objects": body})
    assert r.status_code == 200, r.text
    [slot] = r.json()["objects"]
    async with httpx.AsyncClient() as http:
        up = slot["upload"]
        put = await http.put(up["url"], content=data, headers=up["headers"])
        assert put.status_code == 200, put.text
    return int(slot["seq"])


async def heartbeat(repo: Repo) -> dict[str, Any]:
    r = await repo.post("/api/agent/heartbeat", {})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_a_commit_retires_the_replaced_packs_and_pruning_deletes_them_after_the_grace(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    p1, p2, p3 = pack(), pack(), pack()
    a = await repo.snapshot([p1, p2])
    b = await repo.snapshot([p3], reuse=[p2])
    await expire(a)
    report = await services.tasks.maintain()
    assert [d["name"] for d in report.prune.deleted if d["kind"] == "data"] == [name(p1)]
    assert len(report.compaction.requested) == 1
    assert (await heartbeat(repo))["compact"]["requestedAt"]
    again = await services.tasks.maintain()
    assert again.compaction.requested == [], "asked once"

    started = await compact_start(repo)
    assert [s["backupId"] for s in started["snapshots"]] == [b]
    # A compaction runs: pruning leaves the repository alone.
    assert len((await services.tasks.prune.run()).deferred) == 1
    cid = started["compactionId"]
    smaller = os.urandom(600)  # p2's live part, say
    seq = await compact_upload(repo, cid, smaller)
    # A snapshot that started before the commit may still use p2.
    running = await repo.start()
    r = await repo.post(
        "/api/agent/repo/compact/commit",
        {
            "compactionId": cid,
            "packs": [name(smaller)],
            "snapshots": [{"backupId": b, "packs": encode_bitmap([repo.seqs[p3], seq])}],
        },
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["packsRetired"] == 1 and done["bytesRetired"] == len(p2)
    assert done["packsWritten"] == 1 and done["bytesWritten"] == len(smaller)
    assert await state(p2) == "retired" and await state(smaller) == "stored"
    assert (await heartbeat(repo))["compact"] is None
    # The commit is idempotent.
    r = await repo.post(
        "/api/agent/repo/compact/commit",
        {"compactionId": cid, "packs": [name(smaller)], "snapshots": []},
    )
    assert r.status_code == 200 and r.json()["packsRetired"] == 1

    # The running snapshot completes and names p2 again: it is put back, never deleted.
    await repo.upload(running["backupId"], [("snapshot", running["backupId"], b"s")])
    r = await repo.post(
        "/api/agent/snapshot/complete",
        {
            "backupId": running["backupId"],
            "status": "completed",
            "packs": encode_bitmap([repo.seqs[p2]]),
        },
    )
    assert r.status_code == 200, r.text
    await repo.release(running["backupId"])
    report = await services.tasks.maintain()
    assert len(report.compaction.committed) == 1
    assert report.prune.compacted_packs == 0 and await state(p2) == "stored"
    assert name(p2) in data_keys(s3_server, s3_bucket)

    # Once that snapshot expires too, p2 goes, but not before the compaction's grace is over.
    await expire(running["backupId"])
    report = await services.tasks.maintain()
    assert name(p2) not in {d["name"] for d in report.prune.deleted}
    await Compaction.update({Compaction.release_at: utcnow() - timedelta(seconds=1)}).where(
        Compaction.state == "committed"
    )
    report = await services.tasks.maintain()
    assert name(p2) in {d["name"] for d in report.prune.deleted}
    assert data_keys(s3_server, s3_bucket) == {name(p3), name(smaller)}


async def test_retired_packs_wait_out_the_grace_window(
    s3_app: tuple[ApiClient, Services], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client, services = s3_app
    repo = await new_repo(client)
    p1, p2, p3 = pack(), pack(), pack()
    a = await repo.snapshot([p1, p2])
    b = await repo.snapshot([p3], reuse=[p2])
    await expire(a)
    await services.tasks.maintain()
    cid = (await compact_start(repo))["compactionId"]
    smaller = os.urandom(500)
    seq = await compact_upload(repo, cid, smaller)
    # Bigger than what it replaces: refused, nothing changed.
    bigger = os.urandom(5000)
    big_seq = await compact_upload(repo, cid, bigger)
    r = await repo.post(
        "/api/agent/repo/compact/commit",
        {
            "compactionId": cid,
            "packs": [name(bigger)],
            "snapshots": [{"backupId": b, "packs": encode_bitmap([repo.seqs[p3], big_seq])}],
        },
    )
    assert r.status_code == 400 and "larger than the packs they replace" in r.json()["detail"]
    assert await state(p2) == "stored"
    r = await repo.post(
        "/api/agent/repo/compact/commit",
        {
            "compactionId": cid,
            "packs": [name(smaller)],
            "snapshots": [{"backupId": b, "packs": encode_bitmap([repo.seqs[p3], seq])}],
        },
    )
    assert r.status_code == 200, r.text
    report = await services.tasks.maintain()
    assert report.prune.compacted_packs == 0 and name(p2) in data_keys(s3_server, s3_bucket)
    # The window ends.
    await Compaction.update({Compaction.release_at: utcnow() - timedelta(seconds=1)}).where(
        Compaction.state == "committed"
    )
    report = await services.tasks.maintain()
    assert report.prune.compacted_packs == 1
    assert report.prune.compacted_bytes == len(p2)
    assert name(p2) not in data_keys(s3_server, s3_bucket)
    row = await Repository.select(Repository.compact_requested_at).first()
    assert row is not None and row["compact_requested_at"] is None
    assert hashlib.sha256(smaller).hexdigest() in data_keys(s3_server, s3_bucket)
