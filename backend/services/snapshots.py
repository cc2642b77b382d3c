"""Snapshots (incremental backups) on the server: the agent's repository, the pre-signed URLs for
its content-addressed objects, and the checks before a snapshot is recorded as completed.

The server never sees inside the objects (docs/repository-format.md). What it keeps: which objects
a repository holds (kind, name, size, and for packs a sequence number), and for each committed
snapshot the bitmap of packs it needs, so that it can later tell on its own what no snapshot uses.

Every call is scoped to the calling agent: its own repository, its own backups.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import msgspec

from backend.backups.tables import BackupConfig, BackupLog
from backend.errors import Conflict, InvalidInput
from backend.repos.tables import RepoObject, Repository, Snapshot
from backend.run_schemas import (
    LeaseOut,
)
from backend.services.agents import AgentIdentity, assigned_config
from backend.services.backup_start import agent_backup
from backend.services.backups import BackupService, errors_json, storage_call
from backend.services.clock import aware, iso, utcnow
from backend.services.keys import repository_key
from backend.services.leases import LeaseService, agent_owner, config_lease_name
from backend.settings import Settings
from backend.snapshot_schemas import (
    ListedOut,
    ObjectIn,
    ObjectRef,
    ObjectSlotOut,
    ParentOut,
    PutOut,
    ReadOut,
    RepoListResponse,
    RepoReadResponse,
    RepositoryOut,
    SnapshotAbortRequest,
    SnapshotCompleteRequest,
    SnapshotStartRequest,
    SnapshotStartResponse,
)
from backend.storage import Storage
from desktop_agent.engine.repo_protocol import decode_bitmap, encode_bitmap

__all__ = ["OBJECT_LIMITS", "SnapshotService"]

log = logging.getLogger("backapp.snapshots")

#: The largest object of each kind an agent may upload (docs/agent-api.md).
OBJECT_LIMITS = {
    "config": 64 * 1024,
    "data": 128 * 1024 * 1024,
    "index": 128 * 1024 * 1024,
    "snapshot": 16 * 1024 * 1024,
}
SERVER_LEASE_SECONDS = 300
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEAD_CONCURRENCY = 16


class SnapshotService:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        backups: BackupService,
        leases: LeaseService,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.backups = backups
        self.leases = leases
        self.clock = clock

    # --- starting ------------------------------------------------------------------------------

    async def start(self, agent: AgentIdentity, req: SnapshotStartRequest) -> SnapshotStartResponse:
        """``POST /api/agent/snapshot/start``: the config must be this agent's and incremental;
        the run holds the config's lease (the runner's, or one taken here)."""
        config_id, config_name = await assigned_config(agent, req.config_id)
        row = (
            await BackupConfig.select(BackupConfig.options)
            .where(BackupConfig.id == config_id)
            .first()
        )
        options = (row or {}).get("options") or {}
        if isinstance(options, str):  # SQLite hands JSON columns back as text
            options = msgspec.json.decode(options)
        kind = options.get("type", "full") if isinstance(options, dict) else "full"
        if kind != "incremental":
            raise InvalidInput(
                f'configId: this configuration makes "{kind}" backups, not snapshots '
                '(options.type "incremental")',
                field="configId",
            )
        new = await agent_backup(agent, req, config_id, config_name, filename="")
        lease = await self._lease(agent, config_id, req.lease_token)
        lease_token = req.lease_token if lease is None else lease.token
        repo = await self._repository(agent)
        parent = await self._parent(agent, config_id)
        log_id = uuid.uuid4()
        now = self.clock()
        await self.backups.open_log(
            replace(new, filename=f"snapshot-{now:%Y-%m-%d-%H%M%S}"),
            log_id=log_id,
            key=repository_key(repo, "snapshot", str(log_id)),
            backup_type="incremental",
            lease_token=lease_token,
        )
        # After the backup row exists (pruning looks for running snapshots after marking packs
        # ``deleting``): packs being pruned are not live, so the agent forgets them.
        live = await RepoObject.select(RepoObject.seq).where(
            (RepoObject.repository == repo["id"])
            & (RepoObject.kind == "data")
            & RepoObject.state.is_in(["pending", "stored"])
        )
        seqs = [int(r["seq"]) for r in live if r["seq"] is not None]
        return SnapshotStartResponse(
            backup_id=str(log_id),
            lease=lease,
            parent=parent,
            repository=RepositoryOut(
                agent_id=str(agent.id),
                initialized=bool(repo["initialized"]),
                # Another run of the repository may have added packs since its row was read:
                # the count covers every pack the bitmap names.
                pack_count=max([int(repo["pack_count"]), *(s + 1 for s in seqs)]),
                live_packs=encode_bitmap(seqs),
            ),
        )

    async def _lease(
        self, agent: AgentIdentity, config_id: uuid.UUID, token: str | None
    ) -> LeaseOut | None:
        name = config_lease_name(config_id)
        if token is not None:
            renewed = await self.leases.renew(name, token, SERVER_LEASE_SECONDS)
            if renewed is None:
                raise Conflict(
                    "leaseToken: this run no longer holds the configuration's lease "
                    "(it lapsed and another runner took it)"
                )
            return None
        grant = await self.leases.acquire(
            name, f"agent {agent.name}", SERVER_LEASE_SECONDS, owner=agent_owner(agent.id)
        )
        if grant is None:
            current = await self.leases.current(name)
            who = current["holder"] if current else "another runner"
            until = iso(aware(current["expires_at"])) if current else "soon"
            raise Conflict(f"config is already running on {who} until {until}")
        return LeaseOut(token=grant.token, expires_at=iso(grant.expires_at) or "")

    async def _repository(self, agent: AgentIdentity) -> dict[str, Any]:
        """The agent's repository row, made on its first snapshot. ``Conflict`` for an agent
        whose repository a newer machine continues (docs/recovery.md): it may neither write
        there nor start a second repository under the same prefix."""
        row: dict[str, Any] | None = (
            await Repository.select().where(Repository.agent == agent.id).first()
        )
        if row is None:
            if await Repository.exists().where(Repository.prefix_agent == agent.id):
                raise Conflict(
                    "this machine's snapshot repository is continued by the machine that "
                    "replaces it (the owner's mark); this one can no longer add snapshots to it"
                )
            await Repository.insert(
                Repository(
                    id=uuid.uuid4(),
                    user=agent.user_id,
                    agent=agent.id,
                    created_at=self.clock(),
                    initialized=False,
                    pack_count=0,
                )
            ).on_conflict(action="DO NOTHING")
            row = await Repository.select().where(Repository.agent == agent.id).first()
        assert row is not None
        return row

    async def _parent(self, agent: AgentIdentity, config_id: uuid.UUID) -> ParentOut | None:
        """The config's newest completed snapshot in this agent's repository."""
        row = (
            await BackupLog.select(BackupLog.id, BackupLog.completed_at)
            .where(
                (BackupLog.config == config_id)
                & (BackupLog.agent == agent.id)
                & (BackupLog.backup_type == "incremental")
                & (BackupLog.status == "completed")
            )
            .order_by(BackupLog.completed_at, ascending=False)
            .first()
        )
        if row is None:
            return None
        return ParentOut(backup_id=str(row["id"]), completed_at=iso(row["completed_at"]))

    # --- the objects of a running snapshot ------------------------------------------------------

    async def _running(self, agent: AgentIdentity, backup_id: str) -> dict[str, Any]:
        row = await self.backups.find_log(agent, backup_id)
        if row.get("backup_type") != "incremental":
            raise InvalidInput("backupId: this backup is not a snapshot", field="backupId")
        return row

    async def objects(
        self, agent: AgentIdentity, backup_id: str, objects: Sequence[ObjectIn]
    ) -> list[ObjectSlotOut]:
        """``POST /api/agent/snapshot/objects``: which objects exist, and PUT URLs for the others."""
        row = await self._running(agent, backup_id)
        if row["status"] != "running":
            raise Conflict(f"backupId: this snapshot is already {row['status']}")
        for i, obj in enumerate(objects):
            _check_object(obj, i, backup_id)
        return await self.slots(agent, backup_id, objects)

    async def slots(
        self, agent: AgentIdentity, backup_id: str, objects: Sequence[ObjectIn]
    ) -> list[ObjectSlotOut]:
        """Sequence numbers, and PUT URLs for what is not stored, of checked ``objects`` that the
        run ``backup_id`` (a backup's id, or a compaction's) uploads."""
        repo = await self._repository(agent)
        keys = {(o.kind, o.name) for o in objects}
        rows = await self._rows(repo["id"], keys)
        pruning = sorted(n for (_, n), r in rows.items() if r["state"] == "deleting")
        if pruning:
            # Neither "exists" (it is about to go) nor a fresh URL (the pruner would delete what
            # the agent puts back); the next round has finished with it.
            raise Conflict(
                f"objects: {len(pruning)} object(s) are being pruned from the repository "
                f"({pruning[0]}, …); try again in a minute"
            )
        # New objects (and deleted ones uploaded again): packs get sequence numbers, in one step.
        new = [o for o in _unique(objects) if (o.kind, o.name) not in rows]
        reborn = [
            o for o in _unique(objects) if rows.get((o.kind, o.name), {}).get("state") == "deleted"
        ]
        fresh = [o for o in new + reborn if o.kind == "data"]
        first = await self._allocate(repo["id"], len(fresh)) if fresh else 0
        seqs = {(o.kind, o.name): first + i for i, o in enumerate(fresh)}
        now = self.clock()
        if new:
            await RepoObject.insert(
                *[
                    RepoObject(
                        id=uuid.uuid4(),
                        repository=repo["id"],
                        kind=o.kind,
                        name=o.name,
                        seq=seqs.get((o.kind, o.name)),
                        size=o.size,
                        sha256=o.sha256,
                        state="pending",
                        backup=backup_id,
                        created_at=now,
                    )
                    for o in new
                ]
            ).on_conflict(action="DO NOTHING")
        for o in reborn:
            await RepoObject.update(
                {
                    RepoObject.seq: seqs.get((o.kind, o.name)),
                    RepoObject.state: "pending",
                    RepoObject.size: o.size,
                    RepoObject.sha256: o.sha256,
                    RepoObject.deleted_at: None,
                    RepoObject.backup: backup_id,
                }
            ).where(
                (RepoObject.repository == repo["id"])
                & (RepoObject.kind == o.kind)
                & (RepoObject.name == o.name)
            )
        rows = await self._rows(repo["id"], keys)
        # An object a crashed run uploaded is pending here but may be in storage: look.
        pending = [
            r
            for k, r in rows.items()
            if r["state"] == "pending" and k not in seqs and r["backup"] != backup_id
        ]
        await self._confirm(repo, pending)
        rows = await self._rows(repo["id"], keys) if pending else rows
        out = []
        for o in objects:
            r = rows[(o.kind, o.name)]
            if r["size"] != o.size or r["sha256"] != o.sha256:
                raise Conflict(
                    f"objects: {o.kind} {o.name} is already in the repository with another "
                    "size or checksum"
                )
            if r["state"] == "stored":
                out.append(ObjectSlotOut(kind=o.kind, name=o.name, exists=True, seq=r["seq"]))
                continue
            put = self.storage.presign_put(
                repository_key(repo, o.kind, o.name),
                expires_in=self.settings.presign_seconds,
                size=o.size,
                sha256=o.sha256,
            )
            out.append(
                ObjectSlotOut(
                    kind=o.kind,
                    name=o.name,
                    exists=False,
                    seq=r["seq"],
                    upload=PutOut(
                        url=put.url,
                        method="PUT",
                        headers=dict(put.headers),
                        expires_at=iso(put.expires_at) or "",
                    ),
                )
            )
        return out

    async def _allocate(self, repo_id: uuid.UUID, count: int) -> int:
        """Reserve ``count`` pack sequence numbers in one atomic step; returns the first."""
        rows = (
            await Repository.update({Repository.pack_count: Repository.pack_count + count})
            .where(Repository.id == repo_id)
            .returning(Repository.pack_count)
        )
        return int(rows[0]["pack_count"]) - count

    async def _rows(
        self, repo_id: uuid.UUID, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        if not keys:
            return {}
        names = sorted({name for _, name in keys})
        found = await RepoObject.select().where(
            (RepoObject.repository == repo_id) & RepoObject.name.is_in(names)
        )
        return {(r["kind"], r["name"]): r for r in found if (r["kind"], r["name"]) in keys}

    async def _confirm(
        self, repo: dict[str, Any], rows: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Mark the pending objects found in storage stored; returns the rows not there."""
        if not rows:
            return []
        gate = asyncio.Semaphore(_HEAD_CONCURRENCY)

        async def head(r: dict[str, Any]) -> bool:
            async with gate:
                info = await storage_call(
                    lambda: self.storage.head(repository_key(repo, r["kind"], r["name"]))
                )
            return info is not None and info.size == r["size"]

        present = await asyncio.gather(*(head(r) for r in rows))
        stored = [r["id"] for r, ok in zip(rows, present, strict=True) if ok]
        if stored:
            await RepoObject.update(
                {RepoObject.state: "stored", RepoObject.stored_at: self.clock()}
            ).where(RepoObject.id.is_in(stored) & (RepoObject.state == "pending"))
        return [r for r, ok in zip(rows, present, strict=True) if not ok]

    # --- committing -----------------------------------------------------------------------------

    async def complete(self, agent: AgentIdentity, req: SnapshotCompleteRequest) -> str:
        """``POST /api/agent/snapshot/complete``: check that everything the snapshot needs is
        stored, then record it. Idempotent; a 409 names what is missing (the backup stays
        running so that the agent can upload it and try again)."""
        row = await self._running(agent, req.backup_id)
        if row["status"] != "running":
            if row["status"] == req.status:
                return str(row["status"])
            raise Conflict(f"backupId: this snapshot is already {row['status']}")
        if req.status == "failed":
            await self.backups.finish(
                row,
                status="failed",
                error=req.error or "the agent reported a failure",
                values={BackupLog.errors: errors_json(list(req.errors))},
            )
            return "failed"
        repo = await self._repository(agent)
        try:
            seqs = decode_bitmap(req.packs, limit=int(repo["pack_count"]))
        except ValueError as exc:
            raise InvalidInput(f"packs: {exc}", field="packs") from None
        packs = (
            await RepoObject.select().where(
                (RepoObject.repository == repo["id"])
                & (RepoObject.kind == "data")
                & RepoObject.seq.is_in(sorted(seqs))
            )
            if seqs
            else []
        )
        by_seq = {int(r["seq"]): r for r in packs}
        missing: list[dict[str, str]] = [
            {"kind": "data", "name": by_seq[s]["name"] if s in by_seq else f"#{s}"}
            for s in sorted(seqs)
            if s not in by_seq or by_seq[s]["state"] == "deleted"
        ]
        others = await self._rows(
            repo["id"],
            {("index", n) for n in req.indexes}
            | {("snapshot", req.backup_id), ("config", "config")},
        )
        for kind, name in [("index", n) for n in req.indexes] + [
            ("snapshot", req.backup_id),
            ("config", "config"),
        ]:
            r = others.get((kind, name))
            if r is None or r["state"] == "deleted":
                missing.append({"kind": kind, "name": name})
        candidates = [
            r for r in list(by_seq.values()) + list(others.values()) if r["state"] == "pending"
        ]
        for r in await self._confirm(repo, candidates):
            missing.append({"kind": r["kind"], "name": r["name"]})
        if missing:
            raise Conflict(
                f"{len(missing)} object(s) of this snapshot are not in storage; upload them and "
                "complete again",
                extra={"missing": missing[:1000]},
            )
        if not repo["initialized"]:
            await Repository.update({Repository.initialized: True}).where(
                Repository.id == repo["id"]
            )
        await Snapshot.insert(
            Snapshot(
                id=uuid.uuid4(),
                backup=row["id"],
                repository=repo["id"],
                packs=_bitmap_bytes(req.packs),
                pack_total=len(seqs),
                index_names=list(req.indexes),
                parent=None,
                new_bytes=req.new_bytes,
                created_at=self.clock(),
            )
        ).on_conflict(action="DO NOTHING")
        done = await self.backups.finish(
            row,
            status="completed",
            values={
                BackupLog.files_processed: req.files_processed,
                BackupLog.size: req.size,
                BackupLog.new_bytes: req.new_bytes,
                BackupLog.bytes_transferred: req.new_bytes,
                BackupLog.duration_ms: req.duration,
                BackupLog.errors: errors_json(list(req.errors)),
            },
        )
        if not done:
            final = await self.backups.find_log(agent, req.backup_id)
            return str(final["status"])
        return "completed"

    async def abort(self, agent: AgentIdentity, req: SnapshotAbortRequest) -> str:
        """``POST /api/agent/snapshot/abort``: the snapshot stopped; it is never restorable. What
        it uploaded stays for the next run to reuse."""
        row = await self._running(agent, req.backup_id)
        if row["status"] != "running":
            return str(row["status"])
        reason = req.reason or (
            "cancelled by the user" if req.cancelled else "stopped by the agent"
        )
        # A deliberate stop is "cancelled" (no failure, no alert), as for archives.
        status = "cancelled" if req.cancelled else "failed"
        await self.backups.finish(row, status=status, error=reason)
        return status

    # --- reading --------------------------------------------------------------------------------

    async def read(self, agent: AgentIdentity, refs: Sequence[ObjectRef]) -> RepoReadResponse:
        """``POST /api/agent/repo/read``: GET URLs for objects this agent's repository holds."""
        repo = await self._repository(agent)
        for i, ref in enumerate(refs):
            _check_name(ref.kind, ref.name, f"objects[{i}]")
        rows = await self._rows(repo["id"], {(r.kind, r.name) for r in refs})
        pending = [r for r in rows.values() if r["state"] == "pending"]
        absent = {(r["kind"], r["name"]) for r in await self._confirm(repo, pending)}
        out: list[ReadOut] = []
        missing: list[ObjectRef] = []
        for ref in refs:
            r = rows.get((ref.kind, ref.name))
            if r is None or r["state"] == "deleted" or (ref.kind, ref.name) in absent:
                missing.append(ref)
                continue
            get = self.storage.presign_get(
                repository_key(repo, ref.kind, ref.name), expires_in=self.settings.presign_seconds
            )
            out.append(
                ReadOut(
                    kind=ref.kind,
                    name=ref.name,
                    size=int(r["size"]),
                    url=get.url,
                    method="GET",
                    expires_at=iso(get.expires_at) or "",
                )
            )
        return RepoReadResponse(objects=out, missing=missing)

    async def list_objects(
        self, agent: AgentIdentity, kind: str, after: str | None, limit: int
    ) -> RepoListResponse:
        """``GET /api/agent/repo/objects``: stored objects of one kind, by name (keyset pages)."""
        repo = await self._repository(agent)
        where = (
            (RepoObject.repository == repo["id"])
            & (RepoObject.kind == kind)
            & (RepoObject.state == "stored")
        )
        if after:
            where = where & (RepoObject.name > after)
        rows = await (
            RepoObject.select(RepoObject.name, RepoObject.size, RepoObject.seq)
            .where(where)
            .order_by(RepoObject.name)
            .limit(limit + 1)
        )
        page = rows[:limit]
        return RepoListResponse(
            objects=[ListedOut(name=r["name"], size=int(r["size"]), seq=r["seq"]) for r in page],
            next=page[-1]["name"] if len(rows) > limit else None,
        )


def _unique(objects: Sequence[ObjectIn]) -> list[ObjectIn]:
    seen: set[tuple[str, str]] = set()
    out = []
    for o in objects:
        if (o.kind, o.name) not in seen:
            seen.add((o.kind, o.name))
            out.append(o)
    return out


def _check_name(kind: str, name: str, where: str) -> None:
    if kind in ("data", "index"):
        if not _HEX64.fullmatch(name):
            raise InvalidInput(
                f"{where}.name: a {kind} object is named by its SHA-256: 64 lower-case hex digits",
                field="name",
            )
    elif kind == "snapshot":
        try:
            uuid.UUID(name)
        except ValueError:
            raise InvalidInput(
                f"{where}.name: a snapshot object is named by its backup's id", field="name"
            ) from None
    elif kind == "config" and name != "config":
        raise InvalidInput(f'{where}.name: the config object is named "config"', field="name")


def _check_object(obj: ObjectIn, i: int, backup_id: str) -> None:
    where = f"objects[{i}]"
    _check_name(obj.kind, obj.name, where)
    if obj.kind in ("data", "index") and obj.name != obj.sha256:
        raise InvalidInput(
            f"{where}.name: a {obj.kind} object's name must be its SHA-256", field="name"
        )
    if obj.kind == "snapshot" and obj.name != str(uuid.UUID(backup_id)):
        raise InvalidInput(
            f"{where}.name: a snapshot may only upload its own snapshot object", field="name"
        )
    limit = OBJECT_LIMITS[obj.kind]
    if obj.size > limit:
        raise InvalidInput(
            f"{where}.size: a {obj.kind} object is at most {limit} bytes", field="size"
        )


def _bitmap_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii")) if text else b""
