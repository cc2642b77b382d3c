"""``Repository``: the agent's view of its snapshot repository — keys, local cache, the server's
snapshot endpoints and pre-signed storage — and the operations both backup and restore need
(initialise, sync the cache, upload objects, read snapshots, trees and blobs).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import msgspec

from .._errors import AgentError, NetworkError, StorageError
from .._transport.retry import RetryPolicy
from ..repo_protocol import (
    MAX_OBJECTS_PER_REQUEST,
    ObjectBody,
    ObjectKind,
    ObjectStore,
    ObjectUpload,
    ReadSlot,
    RepoPlane,
    SnapshotStarted,
    body_size,
)
from .cache import Cache
from .crypto import RepoKeys
from .errors import CorruptObject, MissingObject, RepositoryError, WrongKey
from .format import (
    MAGIC_CONFIG,
    MAGIC_INDEX,
    MAGIC_SNAPSHOT,
    VERSION,
    BlobType,
    IndexDoc,
    RepoConfig,
    SnapshotDoc,
    Tree,
    decode_object,
    decode_tree,
    encode_object,
)
from .pack import PackEntry, open_entry

log = logging.getLogger("desktop_agent.engine.repo")


def utc_now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256_hex(data: ObjectBody) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    for part in data:
        digest.update(part)
    return digest.hexdigest()


class Repository:
    """One agent's repository. Thread-safe; ``workers`` bounds parallel transfers of small objects."""

    def __init__(
        self,
        *,
        keys: RepoKeys,
        cache: Cache,
        plane: RepoPlane,
        store: ObjectStore,
        workers: int = 8,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.keys = keys
        self.cache = cache
        self.plane = plane
        self.store = store
        self.workers = workers
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.config: RepoConfig | None = None

    def close(self) -> None:
        self.cache.close()

    # --- storage, with retries -----------------------------------------------------------------

    def _put(
        self,
        backup_id: str,
        upload: ObjectUpload,
        url: str,
        data: ObjectBody,
        headers: dict[str, str],
    ) -> None:
        """PUT one object; a transient failure is retried (with a fresh URL: it may have expired)."""
        attempt = 0
        while True:
            try:
                self.store.put_object(url, data, headers)
                return
            except (StorageError, NetworkError) as exc:
                attempt += 1
                if not getattr(exc, "transient", True) or attempt >= self.retry.max_attempts:
                    raise
                log.warning(
                    "upload of %s %s failed (%s); retrying", upload.kind, upload.name[:16], exc
                )
                self._sleep(self.retry.delay(attempt - 1))
                (slot,) = self.plane.snapshot_objects(backup_id, [upload])
                if slot.exists or slot.url is None:
                    return
                url, headers = slot.url, dict(slot.headers)

    def get(self, slot: ReadSlot, *, start: int | None = None, end: int | None = None) -> bytes:
        """Read an object (or a range of it); ``MissingObject`` when storage does not have it."""
        attempt = 0
        while True:
            try:
                return self.store.get_object(slot.url, start=start, end=end)
            except StorageError as exc:
                attempt += 1
                slot = self._read_again(slot, exc, attempt)

    def _read_again(self, slot: ReadSlot, exc: StorageError, failures: int) -> ReadSlot:
        """The slot to read again after the ``failures``-th failed download (once the retry
        policy's delay has passed); raises when another try is not worth it."""
        if exc.status == 404:
            raise MissingObject(
                f"{slot.kind} object {slot.name[:16]}… is missing from storage"
            ) from exc
        if not exc.transient or failures >= self.retry.max_attempts:
            raise exc
        log.warning("download of %s %s failed (%s); retrying", slot.kind, slot.name[:16], exc)
        self._sleep(self.retry.delay(failures - 1))
        if exc.status == 403:  # an expired URL: ask for a fresh one
            fresh = self.read_slots([(slot.kind, slot.name)]).get((slot.kind, slot.name))
            if fresh is None:
                raise MissingObject(f"{slot.kind} object {slot.name[:16]}… is missing") from exc
            return fresh
        return slot

    def read_spans(
        self, slot: ReadSlot, spans: Sequence[tuple[int, int]]
    ) -> Generator[memoryview, None, None]:
        """The bytes of each ``(offset, length)`` span of an object, in order, read in one
        request from the first span's start to the last one's end and handed out as each span
        arrives: the caller holds one span at a time, never the whole range. Spans are sorted
        and do not overlap; the bytes between them are read and dropped.

        Each view is only valid until the next one is asked for (one buffer serves every span).
        A transient failure is retried from the first span not handed out yet; ``MissingObject``
        when storage does not have the object, ``CorruptObject`` when it ends too soon."""
        if not spans:
            return
        buf = bytearray(max(length for _, length in spans))
        whole = memoryview(buf)
        done = 0
        attempt = 0
        last = spans[-1][0] + spans[-1][1] - 1
        while done < len(spans):
            pos, filled = spans[done][0], 0  # where the next byte is from; bytes of span in buf
            try:
                for piece in self.store.iter_object(slot.url, start=pos, end=last):
                    view, at, size = memoryview(piece), 0, len(piece)
                    while at < size:
                        offset, length = spans[done]
                        if pos < offset:  # between two spans
                            step = min(offset - pos, size - at)
                        elif filled == 0 and size - at >= length:  # the span is in this piece
                            step = length
                            yield view[at : at + length]
                            done += 1
                        else:
                            step = min(length - filled, size - at)
                            whole[filled : filled + step] = view[at : at + step]
                            filled += step
                            if filled == length:
                                yield whole[:length]
                                done, filled = done + 1, 0
                        at, pos = at + step, pos + step
                        if done == len(spans):
                            return
            except StorageError as exc:
                attempt += 1
                slot = self._read_again(slot, exc, attempt)
                continue
            raise CorruptObject(
                f"{slot.kind} object {slot.name[:16]}… is shorter than its index says"
            )

    # --- transport -----------------------------------------------------------------------------

    def upload(
        self, backup_id: str, items: Sequence[tuple[ObjectKind, str, ObjectBody]]
    ) -> dict[str, int | None]:
        """Upload objects not already stored (one request per 256 for their URLs; the PUTs in
        parallel). Returns each name's pack sequence number (``None`` but for packs)."""
        seqs: dict[str, int | None] = {}
        for start in range(0, len(items), MAX_OBJECTS_PER_REQUEST):
            batch = [
                (
                    ObjectUpload(
                        kind,
                        name,
                        body_size(data),
                        # Content-addressed objects are named by their SHA-256 already.
                        name if kind in ("data", "index") else sha256_hex(data),
                    ),
                    data,
                )
                for kind, name, data in items[start : start + MAX_OBJECTS_PER_REQUEST]
            ]
            slots = self.plane.snapshot_objects(backup_id, [u for u, _ in batch])
            by_name = {s.name: s for s in slots}
            todo = []
            for upload, data in batch:
                slot = by_name.get(upload.name)
                if slot is None:
                    raise RepositoryError(
                        f"the server did not answer for {upload.kind} object {upload.name}"
                    )
                seqs[upload.name] = slot.seq
                if not slot.exists:
                    if slot.url is None:
                        raise RepositoryError(
                            f"the server gave no upload URL for {upload.kind} {upload.name}"
                        )
                    todo.append((upload, slot.url, data, dict(slot.headers)))
            if len(todo) == 1:
                self._put(backup_id, *todo[0])
            elif todo:
                with ThreadPoolExecutor(min(self.workers, len(todo))) as pool:
                    for _ in pool.map(lambda t: self._put(backup_id, *t), todo):
                        pass
        return seqs

    def read_slots(self, refs: Sequence[tuple[ObjectKind, str]]) -> dict[tuple[str, str], ReadSlot]:
        out: dict[tuple[str, str], ReadSlot] = {}
        for start in range(0, len(refs), MAX_OBJECTS_PER_REQUEST):
            for slot in self.plane.repo_read(refs[start : start + MAX_OBJECTS_PER_REQUEST]):
                out[(slot.kind, slot.name)] = slot
        return out

    def download(self, kind: ObjectKind, name: str) -> bytes:
        slot = self.read_slots([(kind, name)]).get((kind, name))
        if slot is None:
            raise MissingObject(f"the repository holds no {kind} object {name}")
        data = self.get(slot)
        if len(data) != slot.size:
            raise CorruptObject(f"{kind} object {name} is {len(data)} bytes, not {slot.size}")
        if kind in ("data", "index") and sha256_hex(data) != name:
            raise CorruptObject(f"{kind} object {name} does not match its name")
        return data

    # --- the repository config -----------------------------------------------------------------

    def open(self, started: SnapshotStarted | None, backup_id: str | None) -> RepoConfig:
        """Check (or, for a new repository during a backup, write) the repository's config with
        this machine's key, and reset the cache if it belonged to another repository."""
        # "Not initialised" means no snapshot has completed yet; a first run that died after
        # storing the config left it behind, and a run of another config may be storing it right
        # now: both are opened, never written again.
        if started is not None and not started.initialized and not self._has_config():
            if backup_id is None:
                raise RepositoryError("the repository has not been initialised yet")
            fresh = RepoConfig(v=VERSION, id=secrets.token_bytes(16), created=utc_now_text())
            data = encode_object(self.keys, MAGIC_CONFIG, fresh)
            try:
                self.upload(backup_id, [("config", "config", data)])
            except AgentError:
                if not self._has_config():
                    raise
        data = self.download("config", "config")
        try:
            config: RepoConfig = decode_object(
                self.keys, MAGIC_CONFIG, data, what="the repository config"
            )
        except CorruptObject as exc:
            raise WrongKey(
                "this machine's repository key does not open the repository on the server "
                "(the key was replaced, or the repository was made by another machine)"
            ) from exc
        known = self.cache.meta("repository-id")
        if self.cache.adopt(config.id) and known is not None:
            log.info("the local cache belonged to another repository; starting it afresh")
        self.config = config
        return config

    def _has_config(self) -> bool:
        return ("config", "config") in self.read_slots([("config", "config")])

    def sync(self, live: Iterable[int], pack_count: int, *, asked_at: float | None = None) -> None:
        """Forget cached packs the server no longer has; rebuild the cache from the repository's
        index objects when it knows fewer packs than the server lists. ``live`` and
        ``pack_count`` are the server's answer to a request sent at ``asked_at`` (Unix time):
        a pack another run of this machine added to the cache after that, or numbered from
        ``pack_count`` on, is newer than the answer and stays."""
        live_set = set(live)
        dropped = self.cache.forget_packs_except(live_set, seen_before=asked_at, below=pack_count)
        if dropped:
            log.info("forgot %d packs that the server deleted", dropped)
        if live_set and len(self.cache.packs()) < len(live_set):
            self.rebuild_cache()

    def rebuild_cache(self) -> int:
        """Load every index object the cache has not read. Returns how many packs it learnt."""
        seqs = self._list_all("data")
        read = self.cache.index_names()
        names = [n for n in self._list_all("index") if n not in read]
        learnt = 0
        known = {p.name for p in self.cache.packs()}
        for name in names:
            doc: IndexDoc = decode_object(
                self.keys, MAGIC_INDEX, self.download("index", name), what=f"index {name}"
            )
            for pack in doc.packs:
                pack_name = pack.id.hex()
                if pack_name in known or pack_name not in seqs:
                    continue
                seq, size = seqs[pack_name]
                self.cache.add_pack(
                    pack_name, seq, size, [PackEntry(*b) for b in pack.blobs], indexed=True
                )
                known.add(pack_name)
                learnt += 1
            self.cache.add_index_names([name])
        return learnt

    def _list_all(self, kind: ObjectKind) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        after: str | None = None
        while True:
            page, after = self.plane.repo_list(kind, after=after)
            for obj in page:
                found[obj.name] = (-1 if obj.seq is None else obj.seq, obj.size)
            if after is None:
                return found

    # --- snapshots, trees, blobs ---------------------------------------------------------------

    def snapshot(self, backup_id: str) -> SnapshotDoc:
        cached = self.cache.snapshot(backup_id)
        if cached is not None:
            return msgspec.msgpack.decode(cached, type=SnapshotDoc)
        doc: SnapshotDoc = decode_object(
            self.keys,
            MAGIC_SNAPSHOT,
            self.download("snapshot", backup_id),
            what=f"snapshot {backup_id}",
        )
        if doc.backupId != backup_id:
            raise CorruptObject(f"snapshot {backup_id} names another backup ({doc.backupId})")
        self.cache.put_snapshot(backup_id, msgspec.msgpack.encode(doc))
        return doc

    def remember(self, doc: SnapshotDoc) -> None:
        """Keep a snapshot this machine wrote in the cache (no download to read it back)."""
        self.cache.put_snapshot(doc.backupId, msgspec.msgpack.encode(doc))

    def tree(self, tree_id: bytes) -> Tree:
        plain = self.cache.tree(tree_id)
        if plain is None:
            plain = self.blob(tree_id, BlobType.TREE)
            self.cache.put_tree(tree_id, plain)
        return decode_tree(plain, what=f"tree {tree_id.hex()[:16]}")

    def blob(self, blob_id: bytes, kind: BlobType) -> bytes:
        """One blob's plaintext, fetched with a ranged GET of its pack."""
        loc = self.cache.locate([blob_id]).get(blob_id)
        if loc is None and self.rebuild_cache():
            loc = self.cache.locate([blob_id]).get(blob_id)
        if loc is None:
            raise MissingObject(f"blob {blob_id.hex()[:16]} is in no pack this machine knows")
        e = loc.entry
        if e.type != kind:
            raise CorruptObject(f"blob {blob_id.hex()[:16]} has the wrong type")
        slot = self.read_slots([("data", loc.pack)]).get(("data", loc.pack))
        if slot is None:
            raise MissingObject(f"pack {loc.pack[:16]}… is missing from the repository")
        sealed = self.get(slot, start=e.offset, end=e.offset + e.length - 1)
        return open_entry(
            self.keys,
            e,
            sealed,
            what=f"blob {blob_id.hex()[:16]} in pack {loc.pack[:16]}",
        )
