"""A snapshot repository driven through the real agent API (packs PUT to S3 for real), for the
server's pruning and compaction tests."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from backend.backups.tables import BackupLog
from backend.repos.tables import RepoObject
from desktop_agent.engine.repo_protocol import encode_bitmap
from tests.support.api import ApiClient
from tests.support.s3 import S3Endpoint

CONFIG_BYTES = b"repository config (opaque to the server)"


class Repo:
    """One agent's repository driven through the agent API, packs PUT to S3 for real."""

    def __init__(self, client: ApiClient, key: str, config_id: str) -> None:
        self.client, self.key, self.config_id = client, key, config_id
        self.seqs: dict[bytes, int] = {}
        self.leases: dict[str, str] = {}

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.agent_post(self.key, path, body)

    async def start(self) -> dict[str, Any]:
        r = await self.post("/api/agent/snapshot/start", {"configId": self.config_id})
        assert r.status_code == 200, r.text
        self.leases[r.json()["backupId"]] = r.json()["lease"]["token"]
        return dict(r.json())

    async def release(self, backup_id: str) -> None:
        r = await self.post(
            "/api/agent/lease/release",
            {"configId": self.config_id, "token": self.leases.pop(backup_id)},
        )
        assert r.status_code == 200, r.text

    async def upload(self, backup_id: str, objects: Sequence[tuple[str, str, bytes]]) -> None:
        body = [
            {"kind": k, "name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for k, n, d in objects
        ]
        r = await self.post("/api/agent/snapshot/objects", {"backupId": backup_id, "objects": body})
        assert r.status_code == 200, r.text
        async with httpx.AsyncClient() as http:
            for slot, (_, _, data) in zip(r.json()["objects"], objects, strict=True):
                if slot["seq"] is not None:
                    self.seqs[data] = slot["seq"]
                if not slot["exists"]:
                    up = slot["upload"]
                    put = await http.put(up["url"], content=data, headers=up["headers"])
                    assert put.status_code in (200, 412), put.text

    async def snapshot(
        self, new: Sequence[bytes], reuse: Sequence[bytes] = (), *, complete: bool = True
    ) -> str:
        """A snapshot that uploads ``new`` packs and also needs ``reuse`` (uploaded before)."""
        started = await self.start()
        backup_id = started["backupId"]
        objects = [("config", "config", CONFIG_BYTES)]
        objects += [("data", hashlib.sha256(p).hexdigest(), p) for p in new]
        await self.upload(backup_id, objects)
        if not complete:
            return str(backup_id)
        snap = b"snapshot " + backup_id.encode()
        await self.upload(backup_id, [("snapshot", backup_id, snap)])
        r = await self.post(
            "/api/agent/snapshot/complete",
            {
                "backupId": backup_id,
                "status": "completed",
                "size": 1,
                "newBytes": sum(len(p) for p in new),
                "packs": encode_bitmap(self.seqs[p] for p in [*new, *reuse]),
            },
        )
        assert r.status_code == 200, r.text
        await self.release(backup_id)
        return str(backup_id)

    async def fail(self, backup_id: str) -> None:
        r = await self.post("/api/agent/snapshot/abort", {"backupId": backup_id})
        assert r.status_code == 200, r.text
        await self.release(backup_id)


def pack() -> bytes:
    return os.urandom(1000)


def data_keys(endpoint: S3Endpoint, bucket: str) -> set[str]:
    listed = endpoint.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1] for o in listed if "/repo/data/" in o["Key"]}


def name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def expire(*backup_ids: str) -> None:
    await BackupLog.update({BackupLog.status: "expired"}).where(
        BackupLog.id.is_in([uuid.UUID(b) for b in backup_ids])
    )


async def state(data: bytes) -> str:
    row = await RepoObject.select(RepoObject.state).where(RepoObject.name == name(data)).first()
    assert row is not None
    return str(row["state"])


async def new_repo(client: ApiClient, **options: Any) -> Repo:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(
        agent_id, options={"type": "incremental", "retentionDays": 0, **options}
    )
    return Repo(client, key, config["id"])
