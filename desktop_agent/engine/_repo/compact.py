"""Compaction: rewrite the partly-used packs of this machine's repository into smaller ones.

Pruning on the server deletes the packs no live snapshot names; a pack that still holds one live
blob stays whole. Only this machine can tell which blobs are live (it holds the key), so when the
server asks (or by hand, ``backapp-agent compact``):

1. ``start`` on the server: the live snapshots (with their pack bitmaps) and the stored packs;
2. read every live snapshot's trees: the live blobs, and where the cache places each;
3. pick the packs with at least ``threshold`` percent of their bytes unused;
4. download each, check it (its SHA-256 and every live blob's seal and id), and copy its live
   blobs, sealed as they are, into new packs (the format of backups: docs/repository-format.md);
5. upload the new packs and an index object listing them (pre-signed PUTs);
6. ``commit`` each changed snapshot's bitmap: the old bitmap minus the rewritten packs, plus the
   packs now holding its blobs. The server retires the old packs and prunes them after its
   grace window.

Nothing is changed before the commit: stopped anywhere before it, every snapshot keeps its old
packs, and what was uploaded is pruned later by the server (``abort`` says so at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ApiError
from ..repo_protocol import (
    ObjectKind,
    ObjectUpload,
    UploadSlot,
    decode_bitmap,
    encode_bitmap,
)
from .cache import BlobLocation
from .errors import CorruptObject, RepositoryError
from .format import (
    MAGIC_INDEX,
    PACK_SIZE,
    VERSION,
    IndexDoc,
    IndexPack,
    SealedBlob,
    encode_object,
)
from .pack import Pack, PackWriter, open_entry, read_pack_header
from .repository import Repository, sha256_hex

log = logging.getLogger("desktop_agent.engine.repo")

DEFAULT_THRESHOLD = 20.0
"""Percent of a pack's bytes that must be unused before it is rewritten."""
_INDEX_BLOBS = 100_000

Say = Callable[[str], None]
"""Progress, in words."""


@dataclass(frozen=True, slots=True)
class CompactStarted:
    compaction_id: str
    pack_count: int
    live_packs: frozenset[int]
    snapshots: dict[str, tuple[str | None, frozenset[int]]]
    """Backup id -> (config id, the packs its bitmap names now)."""


class CompactPlane:
    """The server's compaction endpoints (docs/agent-api.md, "Extensions: compaction") over the
    agent API client's ``compact_call``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def start(self) -> CompactStarted:
        body = self.client.compact_call("start", {})
        try:
            repo = body["repository"]
            return CompactStarted(
                compaction_id=str(body["compactionId"]),
                pack_count=int(repo["packCount"]),
                live_packs=frozenset(decode_bitmap(str(repo["livePacks"]))),
                snapshots={
                    str(s["backupId"]): (
                        None if s.get("configId") is None else str(s["configId"]),
                        frozenset(decode_bitmap(str(s["packs"]))),
                    )
                    for s in body["snapshots"]
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}") from exc

    def objects(self, compaction_id: str, objects: Sequence[ObjectUpload]) -> list[UploadSlot]:
        body = self.client.compact_call(
            "objects",
            {
                "compactionId": compaction_id,
                "objects": [
                    {"kind": o.kind, "name": o.name, "size": o.size, "sha256": o.sha256}
                    for o in objects
                ],
            },
        )
        try:
            return [
                UploadSlot(
                    kind=item["kind"],
                    name=str(item["name"]),
                    exists=bool(item["exists"]),
                    seq=None if item.get("seq") is None else int(item["seq"]),
                    url=(item.get("upload") or {}).get("url"),
                    headers=dict((item.get("upload") or {}).get("headers") or {}),
                )
                for item in body["objects"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}") from exc

    def commit(
        self,
        compaction_id: str,
        packs: Sequence[str],
        indexes: Sequence[str],
        snapshots: Mapping[str, Iterable[int]],
    ) -> dict[str, Any]:
        body: dict[str, Any] = self.client.compact_call(
            "commit",
            {
                "compactionId": compaction_id,
                "packs": list(packs),
                "indexes": list(indexes),
                "snapshots": [
                    {"backupId": b, "packs": encode_bitmap(seqs)} for b, seqs in snapshots.items()
                ],
            },
        )
        return body

    def abort(self, compaction_id: str, reason: str) -> None:
        self.client.compact_call("abort", {"compactionId": compaction_id, "reason": reason[:4000]})


class _Route:
    """The repository's plane with uploads going to the compaction's ``objects`` endpoint, so
    that ``Repository.upload`` (URLs, parallel PUTs, retries) serves compactions too."""

    def __init__(self, plane: Any, compact: CompactPlane) -> None:
        self._plane = plane
        self._compact = compact

    def snapshot_objects(self, backup_id: str, objects: Sequence[ObjectUpload]) -> list[UploadSlot]:
        return self._compact.objects(backup_id, objects)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plane, name)


@dataclass(slots=True)
class CompactResult:
    """What one compaction did."""

    compaction_id: str
    status: str = "committed"
    """``committed`` (packs rewritten) or ``nothing`` (no pack was worth it)."""
    threshold: float = DEFAULT_THRESHOLD
    snapshots: int = 0
    """Live snapshots read."""
    packs: int = 0
    """Packs the live snapshots use."""
    packs_rewritten: int = 0
    bytes_rewritten: int = 0
    """Size of the packs rewritten (freed by the server after its grace window)."""
    blobs_copied: int = 0
    packs_written: int = 0
    bytes_written: int = 0
    snapshots_changed: int = 0
    release_at: str | None = None
    rewritten: list[str] = field(default_factory=list)

    @property
    def bytes_saved(self) -> int:
        return max(0, self.bytes_rewritten - self.bytes_written)

    def to_json(self) -> dict[str, Any]:
        return {
            "compactionId": self.compaction_id,
            "status": self.status,
            "threshold": self.threshold,
            "snapshots": self.snapshots,
            "packs": self.packs,
            "packsRewritten": self.packs_rewritten,
            "bytesRewritten": self.bytes_rewritten,
            "blobsCopied": self.blobs_copied,
            "packsWritten": self.packs_written,
            "bytesWritten": self.bytes_written,
            "bytesSaved": self.bytes_saved,
            "snapshotsChanged": self.snapshots_changed,
            "releaseAt": self.release_at,
        }


@dataclass(slots=True)
class _Live:
    """The live snapshots' trees: every live blob, and each tree's chunks and subtrees."""

    roots: dict[str, bytes] = field(default_factory=dict)
    trees: dict[bytes, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = field(default_factory=dict)
    chunks: set[bytes] = field(default_factory=set)

    def blobs(self) -> set[bytes]:
        return self.chunks | set(self.trees)

    def needs(self, backup_id: str) -> set[bytes]:
        """Every blob the snapshot needs (its trees and its files' chunks)."""
        out: set[bytes] = set()
        pending = [self.roots[backup_id]]
        while pending:
            tid = pending.pop()
            if tid in out:
                continue
            out.add(tid)
            chunks, subtrees = self.trees[tid]
            out.update(chunks)
            pending.extend(subtrees)
        return out


class Compactor:
    """One compaction of ``repo`` (opened with this machine's key) through ``plane``."""

    def __init__(
        self,
        repo: Repository,
        plane: CompactPlane,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        config_id: str | None = None,
        pack_size: int = PACK_SIZE,
        say: Say | None = None,
    ) -> None:
        self.repo = repo
        self.plane = plane
        self.threshold = threshold
        self.config_id = config_id
        self.pack_size = pack_size
        self.say: Say = say or (lambda _text: None)
        self._uploader = Repository(
            keys=repo.keys,
            cache=repo.cache,
            plane=_Route(repo.plane, plane),  # type: ignore[arg-type]
            store=repo.store,
            workers=repo.workers,
            retry=repo.retry,
        )

    def run(self) -> CompactResult:
        """Compact; ``CompactResult`` says what changed. Any error aborts the compaction on the
        server (nothing changed) and is raised."""
        started = self.plane.start()
        try:
            return self._run(started)
        except BaseException as exc:
            try:
                self.plane.abort(started.compaction_id, str(exc) or type(exc).__name__)
            except Exception as err:  # the server abandons it when its lease lapses
                log.warning("could not tell the server the compaction stopped: %s", err)
            raise

    def _run(self, started: CompactStarted) -> CompactResult:
        repo = self.repo
        result = CompactResult(started.compaction_id, threshold=self.threshold)
        repo.sync(started.live_packs, started.pack_count)
        self.say(f"reading the folder listings of {len(started.snapshots)} live snapshot(s)")
        live = self._read(started)
        result.snapshots = len(started.snapshots)
        blobs = live.blobs()
        places = repo.cache.locate(blobs)
        if len(places) < len(blobs):
            repo.rebuild_cache()
            places = repo.cache.locate(blobs)
        lost = len(blobs) - len(places)
        if lost:
            raise RepositoryError(
                f"{lost} blob(s) of the live snapshots are in no pack this machine knows; "
                "nothing was compacted (run `backapp-agent check` to see which files)"
            )
        chosen = self._choose(started, places, result)
        if not chosen:
            self.say("no pack is worth rewriting")
            self.plane.commit(started.compaction_id, [], [], {})
            result.status = "nothing"
            return result
        moved, written = self._rewrite(started.compaction_id, chosen, blobs, places, result)
        indexes = self._index(started.compaction_id, written)
        gone = {seq for _, seq, _ in chosen}
        changes: dict[str, set[int]] = {}
        for backup_id, (_config, before) in started.snapshots.items():
            needed = {moved.get(b, places[b].seq) for b in live.needs(backup_id)}
            after = (set(before) - gone) | needed
            if after != set(before):
                changes[backup_id] = after
        self.say(f"committing: {len(changes)} snapshot(s) move to {len(written)} new pack(s)")
        answer = self.plane.commit(
            started.compaction_id, [p.name for p, _ in written], indexes, changes
        )
        result.snapshots_changed = len(changes)
        result.release_at = answer.get("releaseAt")
        # The cache follows: the rewritten packs are gone for this machine, the new ones in.
        keep = {p.seq for p in repo.cache.packs()} - gone
        repo.cache.forget_packs_except(keep)
        for pack, seq in written:
            repo.cache.add_pack(pack.name, seq, pack.size, pack.entries, indexed=True)
        repo.cache.add_index_names(indexes)
        return result

    def _read(self, started: CompactStarted) -> _Live:
        live = _Live()
        for backup_id in started.snapshots:
            root = self.repo.snapshot(backup_id).tree
            live.roots[backup_id] = root
            pending = [root]
            while pending:
                tid = pending.pop()
                if tid in live.trees:
                    continue
                tree = self.repo.tree(tid)
                chunks: list[bytes] = []
                subtrees: list[bytes] = []
                for node in tree.nodes:
                    if node.type == "dir" and node.subtree is not None:
                        subtrees.append(node.subtree)
                    elif node.type == "file":
                        chunks.extend(node.content)
                live.trees[tid] = (tuple(chunks), tuple(subtrees))
                live.chunks.update(chunks)
                pending.extend(subtrees)
        return live

    def _choose(
        self, started: CompactStarted, places: dict[bytes, BlobLocation], result: CompactResult
    ) -> list[tuple[str, int, int]]:
        """The packs to rewrite: (name, seq, size), in sequence order."""
        named: set[int] = set()
        scope: set[int] = set()
        for config_id, packs in started.snapshots.values():
            named |= packs
            if self.config_id is None or config_id == self.config_id:
                scope |= packs
        used: dict[str, int] = {}
        for loc in places.values():
            used[loc.pack] = used.get(loc.pack, 0) + loc.entry.length
        # Headers are not unused space: a small pack would otherwise be rewritten every time.
        held = self.repo.cache.blob_bytes()
        chosen = []
        for pack in self.repo.cache.packs():
            if pack.seq not in named:
                continue
            result.packs += 1
            unused = held.get(pack.name, 0) - used.get(pack.name, 0)
            if pack.seq in scope and unused * 100 >= self.threshold * pack.size:
                chosen.append((pack.name, pack.seq, pack.size))
        total = sum(size for _, _, size in chosen)
        self.say(
            f"{len(chosen)} of {result.packs} pack(s) have at least {self.threshold:g}% unused "
            f"bytes ({total} bytes to rewrite)"
        )
        return chosen

    def _rewrite(
        self,
        compaction_id: str,
        chosen: list[tuple[str, int, int]],
        live: set[bytes],
        places: dict[bytes, BlobLocation],
        result: CompactResult,
    ) -> tuple[dict[bytes, int], list[tuple[Pack, int]]]:
        """Copy the live blobs of the chosen packs into new packs; returns where each moved blob
        is now (its pack's sequence number) and the new packs with their numbers."""
        writers = {0: PackWriter(self.repo.keys), 1: PackWriter(self.repo.keys)}
        pending: dict[bytes, int] = {}
        moved: dict[bytes, int] = {}
        written: list[tuple[Pack, int]] = []

        def flush(kind: int) -> None:
            writer = writers[kind]
            if not len(writer):
                return
            writers[kind] = PackWriter(self.repo.keys)
            pack = writer.finish()
            seqs = self._uploader.upload(compaction_id, [("data", pack.name, pack.parts)])
            seq = seqs.get(pack.name)
            if seq is None:
                raise RepositoryError(f"the server gave pack {pack.name[:16]} no sequence number")
            written.append((pack, seq))
            result.packs_written += 1
            result.bytes_written += pack.size
            for e in pack.entries:
                moved[e.id] = seq
                pending.pop(e.id, None)

        for i, (name, _seq, size) in enumerate(chosen, 1):
            self.say(f"rewriting pack {i} of {len(chosen)} ({name[:16]}…, {size} bytes)")
            data = self.repo.download("data", name)
            entries = read_pack_header(self.repo.keys, data, what=f"pack {name[:16]}…")
            view = memoryview(data)
            held = set()
            for e in entries:
                loc = places.get(e.id)
                if e.id not in live or loc is None or loc.pack != name or e.id in pending:
                    continue
                if e.id in moved:
                    continue
                sealed = bytes(view[e.offset : e.offset + e.length])
                # A damaged blob must not be copied as if it were good: stop, change nothing.
                open_entry(
                    self.repo.keys,
                    e,
                    sealed,
                    what=f"blob {e.id.hex()[:16]}… in pack {name[:16]}…",
                )
                writers[e.type].add(SealedBlob(e.type, e.id, sealed, e.raw_length, e.compressed))
                pending[e.id] = e.type
                held.add(e.id)
                result.blobs_copied += 1
                if writers[e.type].size >= self.pack_size or writers[e.type].full:
                    flush(e.type)
            wanted = {b for b, loc in places.items() if loc.pack == name and b in live}
            if wanted - held - set(moved):
                raise CorruptObject(
                    f"pack {name[:16]}… does not hold {len(wanted - held - set(moved))} blob(s) "
                    "the index places there; nothing was compacted (run `backapp-agent check`)"
                )
            result.packs_rewritten += 1
            result.bytes_rewritten += size
            result.rewritten.append(name)
        flush(0)
        flush(1)
        return moved, written

    def _index(self, compaction_id: str, written: list[tuple[Pack, int]]) -> list[str]:
        """Upload index objects listing the new packs; returns their names."""
        names: list[str] = []
        batch: list[IndexPack] = []
        count = 0

        def put() -> None:
            nonlocal batch, count
            if not batch:
                return
            data = encode_object(self.repo.keys, MAGIC_INDEX, IndexDoc(v=VERSION, packs=batch))
            name = sha256_hex(data)
            kind: ObjectKind = "index"
            self._uploader.upload(compaction_id, [(kind, name, data)])
            names.append(name)
            batch, count = [], 0

        for pack, _seq in written:
            blobs = [tuple(e) for e in pack.entries]
            batch.append(IndexPack(id=bytes.fromhex(pack.name), blobs=blobs))  # type: ignore[arg-type]
            count += len(blobs)
            if count >= _INDEX_BLOBS:
                put()
        put()
        return names
