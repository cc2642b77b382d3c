"""The stages of writing a snapshot after the files are read: claim new blobs, seal them
(zstd, AES-GCM) into packs on the sealer threads, upload full packs on the uploader threads, and
list the uploaded packs in index objects; with the errors, cancel and progress all stages share.
``SnapshotWriter`` (``backup.py``) reads the files and walks the folders on top of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Empty, Queue
from typing import cast

import zstandard

from .._cancel import CancelToken
from .._errors import BackupCancelled
from ..protocol import FileError
from .cache import Cache
from .errors import RepositoryError
from .format import MAGIC_INDEX, VERSION, BlobType, IndexDoc, IndexPack, encode_object, seal_blob
from .pack import Pack, PackWriter
from .repository import Repository, sha256_hex
from .walk import Budget
from .write_options import Progress, SnapshotOptions, WriteStats

__all__ = ["INDEX_BLOBS", "BlobPipeline"]

#: An index object written during a snapshot lists the packs of about this many blobs: what
#: waits to be listed is held in memory (the uploaded packs' entries).
INDEX_BLOBS = 32_768
# New blobs of at most this many bytes in all are sealed by the thread that found them.
_SEAL_HERE = 256 * 1024


class BlobPipeline:
    """Blobs in, packs and index objects out (see the module's docstring)."""

    def __init__(
        self,
        repo: Repository,
        backup_id: str,
        *,
        options: SnapshotOptions | None = None,
        cancel: CancelToken | None = None,
        progress: Progress | None = None,
        on_error: Callable[[FileError], None] | None = None,
    ) -> None:
        self.repo = repo
        self.cache: Cache = repo.cache
        self.keys = repo.keys
        self.backup_id = backup_id
        self.options = options or SnapshotOptions()
        self.cancel = cancel
        self.progress = progress
        self.on_error = on_error
        self.stats = WriteStats()
        self.referenced: set[int] = set()
        """Sequence numbers of every pack the snapshot needs."""
        self.uploaded: list[str] = []
        """Names of the packs this run uploaded."""
        self._lock = threading.Lock()
        self._claimed: set[bytes] = set()
        self._budget = Budget(self.options.max_inflight_bytes)
        self._local = threading.local()
        self._writers = {
            BlobType.DATA: PackWriter(self.keys),
            BlobType.TREE: PackWriter(self.keys),
        }
        self._packs: Queue[Pack | None] = Queue(self.options.max_queued_packs)
        self._error: BaseException | None = None
        self._readers = ThreadPoolExecutor(self.options.readers, thread_name_prefix="snap-read")
        self._sealers = ThreadPoolExecutor(self.options.sealers, thread_name_prefix="snap-seal")
        self._seal_jobs: set[Future[None]] = set()
        self._upload_threads = [
            threading.Thread(target=self._upload_loop, name=f"snap-upload-{i}", daemon=True)
            for i in range(self.options.uploaders)
        ]
        for t in self._upload_threads:
            t.start()
        self._last_progress = 0.0
        self.indexes: list[tuple[str, list[str]]] = []
        """Index objects this run uploaded, each with the packs it lists (all of them this
        run's): written as packs are uploaded, from the entries at hand, instead of read back
        from the cache at the end (which on a tree of tiny files was a fifth of the time)."""
        self._index_lock = threading.Lock()
        self._index_packs: list[IndexPack] = []
        self._index_blobs = 0
        self._setup()

    def _setup(self) -> None:
        """A subclass's own state, made last in ``__init__`` (so it need not restate the
        constructor's parameters only to pass them on)."""

    # --- errors, cancel, progress --------------------------------------------------------------

    def _alive(self) -> bool:
        return self._error is None and not (self.cancel is not None and self.cancel.is_set())

    def _check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        if self._error is not None:
            raise self._error

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc

    def _file_error(self, path: str, message: str) -> None:
        err = FileError(path, message)
        with self._lock:
            self.stats.errors.append(err)
        if self.on_error is not None:
            self.on_error(err)

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= 0.25:
            self._last_progress = now
            self.progress(self.stats)

    # --- storing blobs -------------------------------------------------------------------------

    def _compressor(self) -> zstandard.ZstdCompressor:
        z: zstandard.ZstdCompressor | None = getattr(self._local, "zstd", None)
        if z is None:
            z = self._local.zstd = zstandard.ZstdCompressor(level=self.options.zstd_level)
        return z

    def _store(
        self, kind: BlobType, blob_id: bytes, data: bytes, known: Mapping[bytes, int] | None = None
    ) -> None:
        """Make sure the repository will hold this blob: known already, or sealed and packed.
        ``known``: what one lookup in the cache found for a batch of blobs (instead of one query
        per blob)."""
        if known is None:
            with self._lock:
                if blob_id in self._claimed:
                    return
            seq = self.cache.has_blob(blob_id)
            known = {blob_id: seq} if seq is not None else {}
        self._store_many(kind, [(blob_id, data)], known)

    def _store_many(
        self, kind: BlobType, blobs: Sequence[tuple[bytes, bytes]], known: Mapping[bytes, int]
    ) -> None:
        """``_store`` for many blobs at once (``known``: the cache's answer for them): one lock,
        one reservation of memory and one sealer job for a batch of small files, where one per
        file cost more than the file itself."""
        new: list[tuple[bytes, bytes]] = []
        size = 0
        with self._lock:
            claimed = self._claimed
            for blob_id, data in blobs:
                if blob_id in claimed:
                    continue
                seq = known.get(blob_id)
                if seq is not None:
                    self.referenced.add(seq)
                    continue
                claimed.add(blob_id)
                new.append((blob_id, data))
                size += len(data)
        if not new:
            return
        if size <= _SEAL_HERE:
            # Sealing a few small blobs takes less than handing them to a sealer thread (a job,
            # a wake-up, a callback, and the GIL passed back and forth).
            self._seal_blobs(kind, new)
            return
        self._budget.acquire(size, self._alive)
        self._check()
        job = self._sealers.submit(self._seal, kind, new, size)
        with self._lock:
            self._seal_jobs.add(job)
        job.add_done_callback(self._seal_done)

    def _seal_done(self, job: Future[None]) -> None:
        with self._lock:
            self._seal_jobs.discard(job)
        exc = job.exception()
        if exc is not None:
            self._fail(exc)

    def _seal(self, kind: BlobType, blobs: Sequence[tuple[bytes, bytes]], size: int) -> None:
        try:
            if self._alive():
                self._seal_blobs(kind, blobs)
        finally:
            self._budget.release(size)

    def _seal_blobs(self, kind: BlobType, blobs: Sequence[tuple[bytes, bytes]]) -> None:
        self._wait_for_room()
        compressor = self._compressor()
        sealed = [
            seal_blob(self.keys, kind, data, blob_id=blob_id, compressor=compressor)
            for blob_id, data in blobs
        ]
        full: list[PackWriter] = []
        with self._lock:
            for blob in sealed:
                writer = self._writers[kind]
                writer.add(blob)
                if writer.size >= self.options.pack_size or writer.full:
                    self._writers[kind] = PackWriter(self.keys)
                    full.append(writer)
            self.stats.new_blobs += len(sealed)
        for full_writer in full:
            self._queue_pack(full_writer.finish())

    def _wait_for_room(self) -> None:
        """Wait while the queue of finished packs is full. Sealing on meanwhile would only fill
        more packs to hold until an uploader is free: a sealer that finished one waited with it
        in hand, so a first snapshot held up to two 16 MiB packs more than the queue's bound."""
        packs = self._packs
        with packs.not_full:
            while 0 < packs.maxsize <= len(packs.queue) and self._alive():
                packs.not_full.wait(0.5)

    def _queue_pack(self, pack: Pack) -> None:
        while self._alive():
            try:
                self._packs.put(pack, timeout=0.5)
                return
            except Exception:  # queue.Full
                continue

    def _upload_loop(self) -> None:
        while self._upload_next():
            pass

    def _upload_next(self) -> bool:
        """Take the next packs off the queue and upload them; ``False`` once told to stop. A call
        of its own so that the uploaded packs are freed before the thread waits for more: kept
        in the loop's variables, an idle uploader held its last 16 MiB pack alive (part of a
        first snapshot's peak memory, where reading and sealing are slower than uploading)."""
        pack = self._packs.get()
        if pack is None:
            return False
        batch = [pack]
        done = False
        while len(batch) < self.options.upload_batch:
            try:
                more = self._packs.get_nowait()
            except Empty:
                break
            if more is None:
                done = True
                break
            batch.append(more)
        if self._alive():
            try:
                self._upload(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the walker
                self._fail(exc)
        return not done

    def _upload(self, packs: Sequence[Pack]) -> None:
        seqs = self.repo.upload(self.backup_id, [("data", p.name, p.parts) for p in packs])
        for p in packs:
            seq = seqs.get(p.name)
            if seq is None:
                raise RepositoryError(f"the server gave pack {p.name[:16]} no sequence number")
            self.cache.add_pack(p.name, seq, p.size, p.entries)
            self._index(p)
            with self._lock:
                for e in p.entries:
                    self._claimed.discard(e.id)
                self.referenced.add(seq)
                self.uploaded.append(p.name)
                self.stats.new_bytes += p.size
                self.stats.packs += 1

    def _index(self, pack: Pack | None) -> None:
        """List an uploaded pack in the next index object; upload it once it lists
        ``INDEX_BLOBS`` blobs (``None``: upload what is listed now)."""
        with self._index_lock:
            if pack is not None:
                # A PackEntry is the tuple an index lists.
                blobs = cast(list[tuple[int, bytes, int, int, int, bool]], pack.entries)
                self._index_packs.append(IndexPack(id=bytes.fromhex(pack.name), blobs=blobs))
                self._index_blobs += len(pack.entries)
            if not self._index_packs or (pack is not None and self._index_blobs < INDEX_BLOBS):
                return
            packs, self._index_packs, self._index_blobs = self._index_packs, [], 0
        data = encode_object(self.keys, MAGIC_INDEX, IndexDoc(v=VERSION, packs=packs))
        name = sha256_hex(data)
        self.repo.upload(self.backup_id, [("index", name, data)])
        with self._index_lock:
            self.indexes.append((name, [p.id.hex() for p in packs]))

    # --- the end -------------------------------------------------------------------------------

    def finish(self) -> None:
        """Seal the last packs, wait for every upload; raise the first error of any stage."""
        try:
            self._readers.shutdown(wait=True)
            while True:
                with self._lock:
                    jobs = list(self._seal_jobs)
                if not jobs:
                    break
                for j in jobs:
                    j.exception()
            self._check()
            for kind in (BlobType.DATA, BlobType.TREE):
                writer = self._writers[kind]
                if len(writer):
                    self._writers[kind] = PackWriter(self.keys)
                    self._queue_pack(writer.finish())
            self._shutdown(wait=True)
            self._check()
            self._index(None)
        except BaseException:
            self._shutdown(wait=False)
            raise
        self._report(force=True)

    def _shutdown(self, *, wait: bool) -> None:
        if not wait:
            self._fail(BackupCancelled("stopped"))
        self._readers.shutdown(wait=wait, cancel_futures=not wait)
        self._sealers.shutdown(wait=wait, cancel_futures=not wait)
        for _ in self._upload_threads:
            while True:
                try:
                    self._packs.put(None, timeout=0.5)
                    break
                except Exception:  # queue.Full: drain it when giving up
                    if not wait:
                        try:
                            self._packs.get_nowait()
                        except Empty:
                            pass
        if wait:
            for t in self._upload_threads:
                t.join()
