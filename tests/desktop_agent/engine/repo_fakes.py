"""An in-memory stand-in for the server's snapshot endpoints and pre-signed storage, with the same
rules (content-addressed names, sequence numbers, pending/stored objects, existence checks at
commit), for unit tests of the snapshot engine. The end-to-end tests use the real server."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from desktop_agent.engine._repo.errors import MissingObject
from desktop_agent.engine.repo_protocol import (
    CompleteSnapshot,
    ListedObject,
    MissingObjects,
    ObjectBody,
    ObjectKind,
    ObjectUpload,
    ReadSlot,
    SnapshotStarted,
    StartSnapshot,
    UploadSlot,
)


@dataclass
class _Obj:
    kind: str
    name: str
    size: int
    sha256: str
    seq: int | None
    stored: bool = False


@dataclass
class FakeRepoServer:
    """Implements ``RepoPlane`` and ``ObjectStore``."""

    objects: dict[tuple[str, str], _Obj] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    """Stored bytes by URL key (``kind/name``)."""
    backups: dict[str, dict] = field(default_factory=dict)
    next_seq: int = 0
    deleted: set[int] = field(default_factory=set)
    puts: list[str] = field(default_factory=list)
    gets: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_put: set[str] = field(default_factory=set)

    # --- RepoPlane -------------------------------------------------------------------------

    def snapshot_start(self, request: StartSnapshot) -> SnapshotStarted:
        backup_id = str(uuid.uuid4())
        parent = None
        for bid, b in self.backups.items():
            if b["config"] == request.config_id and b["status"] == "completed":
                parent = bid
        self.backups[backup_id] = {"config": request.config_id, "status": "running"}
        live = frozenset(
            o.seq for o in self.objects.values() if o.kind == "data" and o.seq not in self.deleted
        )
        return SnapshotStarted(
            backup_id=backup_id,
            agent_id="agent-1",
            initialized=("config", "config") in self.objects
            and self.objects[("config", "config")].stored,
            pack_count=self.next_seq,
            live_packs=live,
            parent_id=parent,
        )

    def snapshot_objects(self, backup_id: str, objects: Sequence[ObjectUpload]) -> list[UploadSlot]:
        assert self.backups[backup_id]["status"] == "running"
        out = []
        with self.lock:
            for o in objects:
                key = (o.kind, o.name)
                obj = self.objects.get(key)
                if obj is not None and obj.seq in self.deleted:
                    obj = None
                if obj is None:
                    seq = None
                    if o.kind == "data":
                        seq = self.next_seq
                        self.next_seq += 1
                    obj = self.objects[key] = _Obj(o.kind, o.name, o.size, o.sha256, seq)
                if not obj.stored and f"{o.kind}/{o.name}" in self.blobs:
                    obj.stored = True
                out.append(
                    UploadSlot(
                        o.kind,
                        o.name,
                        obj.stored,
                        obj.seq,
                        None if obj.stored else f"put://{o.kind}/{o.name}",
                        {"x-sha256": o.sha256, "x-size": str(o.size)},
                    )
                )
        return out

    def snapshot_complete(self, request: CompleteSnapshot) -> str:
        missing = []
        by_seq = {o.seq: o for o in self.objects.values() if o.kind == "data"}
        for seq in request.packs:
            o = by_seq.get(seq)
            if o is None or seq in self.deleted or f"data/{o.name}" not in self.blobs:
                missing.append(("data", o.name if o else str(seq)))
        for name in request.indexes:
            if f"index/{name}" not in self.blobs:
                missing.append(("index", name))
        if f"snapshot/{request.backup_id}" not in self.blobs:
            missing.append(("snapshot", request.backup_id))
        if missing:
            raise MissingObjects("objects are missing", missing)
        b = self.backups[request.backup_id]
        b.update(
            status="completed",
            packs=request.packs,
            indexes=request.indexes,
            size=request.size,
            new=request.new_bytes,
            files=request.files,
        )
        return "completed"

    def snapshot_abort(self, backup_id: str, reason: str, *, cancelled: bool = False) -> None:
        self.backups[backup_id].update(status="cancelled" if cancelled else "failed", error=reason)

    def repo_read(self, objects: Sequence[tuple[ObjectKind, str]]) -> list[ReadSlot]:
        out = []
        for kind, name in objects:
            obj = self.objects.get((kind, name))
            if (
                obj is None
                or obj.seq in self.deleted
                or not obj.stored
                and f"{kind}/{name}" not in self.blobs
            ):
                continue  # the server answers "missing" for it
            out.append(ReadSlot(kind, name, obj.size, f"get://{kind}/{name}"))
        return out

    def repo_list(
        self, kind: ObjectKind, *, after: str | None = None
    ) -> tuple[list[ListedObject], str | None]:
        found = sorted(
            (
                ListedObject(o.name, o.size, o.seq)
                for o in self.objects.values()
                if o.kind == kind and f"{kind}/{o.name}" in self.blobs
            ),
            key=lambda o: o.name,
        )
        found = [o for o in found if after is None or o.name > after]
        page = found[:2]  # small pages, so that paging is exercised
        return page, (page[-1].name if len(found) > 2 else None)

    # --- ObjectStore -----------------------------------------------------------------------

    def put_object(self, url: str, body: ObjectBody, headers: Mapping[str, str]) -> bool:
        if not isinstance(body, bytes):
            body = b"".join(body)
        key = url.removeprefix("put://")
        if key in self.fail_put:
            raise OSError("storage refused the upload")
        assert hashlib.sha256(body).hexdigest() == headers["x-sha256"], "checksum mismatch"
        assert len(body) == int(headers["x-size"])
        with self.lock:
            self.puts.append(key)
            if key in self.blobs:
                return False
            self.blobs[key] = bytes(body)
        return True

    def get_object(self, url: str, *, start: int | None = None, end: int | None = None) -> bytes:
        key = url.removeprefix("get://")
        self.gets.append((key, start, end))
        if key not in self.blobs:
            raise MissingObject(f"{key} is missing from storage")
        data = self.blobs[key]
        if start is None:
            return data
        return data[start : (end + 1) if end is not None else None]

    piece_size = 4096
    """``iter_object`` hands data out in pieces this large (a network read's worth)."""

    def iter_object(
        self, url: str, *, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        key = url.removeprefix("get://")
        self.gets.append((key, start, end))
        if key not in self.blobs:
            raise MissingObject(f"{key} is missing from storage")
        data = self.blobs[key]  # sliced piece by piece: never a copy of the whole range
        stop = len(data) if end is None else min(end + 1, len(data))
        for at in range(start or 0, stop, self.piece_size):
            yield data[at : min(at + self.piece_size, stop)]

    def delete_pack(self, name: str) -> None:
        self.blobs.pop(f"data/{name}", None)
