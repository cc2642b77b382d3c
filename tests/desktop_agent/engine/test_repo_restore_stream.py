"""Memory of restores and snapshots. Restores read a pack range as a stream: each blob is opened and
written as soon as its bytes are in (``Repository.read_spans``), so a restore worker holds about
one blob, not the whole range; a snapshot's idle uploader holds no pack, its sealers hold no
finished pack while the uploaders are busy, and its readers stream one large file at a time."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from desktop_agent.engine._errors import StorageError
from desktop_agent.engine._repo import chunker as chunker_module
from desktop_agent.engine._repo import restore as restore_module
from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.chunker import Chunker
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.errors import CorruptObject, MissingObject
from desktop_agent.engine._repo.format import BlobType
from desktop_agent.engine._repo.pack import Pack
from desktop_agent.engine._repo.pipeline import BlobPipeline
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.restore import SnapshotRestorer, lookup
from desktop_agent.engine._repo.snapshot import SnapshotJob, take_snapshot
from desktop_agent.engine._repo.write_options import SnapshotOptions
from desktop_agent.engine._transport.retry import RetryPolicy
from desktop_agent.engine._transport.storage import HttpStorage
from desktop_agent.engine.repo_protocol import ReadSlot

from .repo_fakes import FakeRepoServer
from .repo_helpers import KEY, restored_root

MiB = 1024 * 1024


def _repo(server: FakeRepoServer, tmp_path: Path) -> Repository:
    return Repository(
        keys=RepoKeys.derive(KEY),
        cache=Cache(tmp_path / "cache.sqlite3"),
        plane=server,
        store=server,
        retry=RetryPolicy(max_attempts=3),
        sleep=lambda _s: None,
    )


def test_a_worker_holds_about_one_blob_of_a_range_not_the_whole_range(
    tmp_path: Path,
) -> None:
    server = FakeRepoServer()
    server.piece_size = 64 * 1024
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    for i in range(3):  # incompressible: blobs as large as their chunks, ~1 MiB each
        (src / f"f{i}.bin").write_bytes(rng.randbytes(5 * MiB))
    r = _repo(server, tmp_path)
    options = SnapshotOptions(readers=1, sealers=1, uploaders=1, pack_size=16 * MiB)
    backup = take_snapshot(
        server, lambda _started: r, SnapshotJob("cfg", "Docs", (str(src),)), options=options
    )
    doc = r.snapshot(backup.backup_id)
    blobs = []
    for i in range(3):
        node = lookup(r, doc.tree, str(src / f"f{i}.bin"))
        assert node is not None
        blobs += r.cache.locate(node.content).values()
    packs = {loc.pack for loc in blobs}
    largest = max(loc.entry.length for loc in blobs)
    in_one_pack = max(sum(loc.entry.length for loc in blobs if loc.pack == p) for p in packs)
    assert in_one_pack >= 12 * MiB > 4 * largest  # a range far larger than a few blobs
    server.gets.clear()

    out = tmp_path / "out"
    tracemalloc.start()
    try:
        report = SnapshotRestorer(r, workers=1).restore(doc.tree, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.errors
    base = restored_root(out, src)
    for i in range(3):
        assert (base / f"f{i}.bin").read_bytes() == (src / f"f{i}.bin").read_bytes()
    assert len([g for g in server.gets if g[0].startswith("data/")]) == len(packs)
    # One blob being assembled, its ciphertext, its plaintext, and a little; a whole range held
    # (as before) would be 12 MiB or more on its own.
    assert peak <= 3 * largest + 2 * MiB, (peak, largest, in_one_pack)


class _Pieces:
    """An object store that hands an object out in pieces of ``size`` bytes, failing once after
    ``fail_after`` bytes if asked to."""

    def __init__(self, data: bytes, size: int, fail_after: int | None = None) -> None:
        self.data = data
        self.size = size
        self.fail_after = fail_after
        self.asked: list[tuple[int | None, int | None]] = []

    def get_object(self, url: str, *, start: int | None = None, end: int | None = None) -> bytes:
        raise AssertionError("read as a stream")

    def put_object(self, url: str, body: object, headers: object) -> bool:
        raise AssertionError("no uploads")

    def iter_object(
        self, url: str, *, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        self.asked.append((start, end))
        if url == "gone":
            raise StorageError("no such key", status=404)
        part = self.data[start or 0 : None if end is None else end + 1]
        sent = 0
        for at in range(0, len(part), self.size):
            if self.fail_after is not None and sent >= self.fail_after:
                self.fail_after = None
                raise StorageError("connection reset", transient=True)
            piece = part[at : at + self.size]
            sent += len(piece)
            yield piece


def _spans_repo(tmp_path: Path, store: _Pieces) -> Repository:
    return Repository(
        keys=RepoKeys.derive(KEY),
        cache=Cache(tmp_path / "cache.sqlite3"),
        plane=FakeRepoServer(),
        store=store,  # type: ignore[arg-type]
        retry=RetryPolicy(max_attempts=3),
        sleep=lambda _s: None,
    )


SPANS = [(3, 10), (13, 1), (40, 25), (70, 30), (100, 1)]


@pytest.mark.parametrize("size", [1, 7, 16, 64, 1000])
def test_spans_come_out_whole_whatever_the_pieces(tmp_path: Path, size: int) -> None:
    data = bytes(random.Random(1).randbytes(200))
    store = _Pieces(data, size)
    r = _spans_repo(tmp_path, store)
    got = [bytes(v) for v in r.read_spans(ReadSlot("data", "p", 200, "u"), SPANS)]
    assert got == [data[o : o + n] for o, n in SPANS]
    assert store.asked == [(3, 100)]  # one request from the first span to the last


def test_a_broken_stream_is_resumed_at_the_first_span_not_handed_out(tmp_path: Path) -> None:
    data = bytes(random.Random(2).randbytes(200))
    store = _Pieces(data, 8, fail_after=50)  # fails inside the span at 40 (bytes 3-52 are in)
    r = _spans_repo(tmp_path, store)
    got = [bytes(v) for v in r.read_spans(ReadSlot("data", "p", 200, "u"), SPANS)]
    assert got == [data[o : o + n] for o, n in SPANS]
    assert store.asked == [(3, 100), (40, 100)]


def test_a_missing_or_short_object_is_named(tmp_path: Path) -> None:
    store = _Pieces(b"x" * 60, 16)
    r = _spans_repo(tmp_path, store)
    with pytest.raises(MissingObject, match="missing from storage"):
        list(r.read_spans(ReadSlot("data", "p", 200, "gone"), SPANS))
    got = []
    with pytest.raises(CorruptObject, match="shorter than its index says"):
        for v in r.read_spans(ReadSlot("data", "p", 200, "u"), SPANS):
            got.append(bytes(v))
    assert len(got) == 2  # the spans that were complete were handed out first


def test_http_storage_streams_a_range_and_cuts_it_from_a_whole_object() -> None:
    body = bytes(range(256)) * 1024

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/missing":
            return httpx.Response(404, content=b"<Error><Code>NoSuchKey</Code></Error>")
        if request.url.path == "/ranged":
            first, last = request.headers["Range"].removeprefix("bytes=").split("-")
            return httpx.Response(206, content=body[int(first) : int(last) + 1])
        return httpx.Response(200, content=body)  # a server that ignores Range

    storage = HttpStorage(transport=httpx.MockTransport(answer))
    try:
        for path in ("/ranged", "/whole"):
            pieces = list(storage.iter_object(f"http://s{path}", start=1000, end=200_000))
            assert b"".join(pieces) == body[1000:200_001], path
            assert storage.get_object(f"http://s{path}", start=0, end=99) == body[:100], path
        assert storage.get_object("http://s/whole") == body
        with pytest.raises(StorageError) as info:
            list(storage.iter_object("http://s/missing"))
        assert info.value.status == 404 and "NoSuchKey" in str(info.value)
    finally:
        storage.close()


@pytest.mark.parametrize("keep_open", [64, 0])
def test_a_file_of_many_chunks_is_opened_once_and_no_descriptor_is_left_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_open: int
) -> None:
    server = FakeRepoServer()
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    (src / "many.bin").write_bytes(rng.randbytes(6 * MiB))
    (src / "small.txt").write_text("small")
    (src / "small.txt").chmod(0o640)
    os.utime(src / "many.bin", ns=(1_600_000_000_000_000_123, 1_600_000_000_000_000_123))
    r = _repo(server, tmp_path)
    options = SnapshotOptions(readers=1, sealers=1, uploaders=1, pack_size=2 * MiB)
    backup = take_snapshot(
        server, lambda _started: r, SnapshotJob("cfg", "Docs", (str(src),)), options=options
    )
    doc = r.snapshot(backup.backup_id)
    node = lookup(r, doc.tree, str(src / "many.bin"))
    assert node is not None and len(node.content) >= 3

    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        opened.append(os.fspath(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(restore_module, "_OPEN_FILES", keep_open)
    monkeypatch.setattr(restore_module.os, "open", counting_open)
    fds_before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else None
    out = tmp_path / "out"
    report = SnapshotRestorer(r, workers=2).restore(doc.tree, out)
    monkeypatch.undo()
    assert not report.errors
    base = restored_root(out, src)
    assert (base / "many.bin").read_bytes() == (src / "many.bin").read_bytes()
    assert (base / "many.bin").stat().st_mtime_ns == 1_600_000_000_000_000_123
    assert (base / "small.txt").stat().st_mode & 0o777 == 0o640
    opens = [p for p in opened if p.endswith("many.bin.backapp-part")]
    assert len(opens) == (1 if keep_open else len(node.content))
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) == fds_before


def test_an_idle_uploader_holds_no_pack(tmp_path: Path) -> None:
    server = FakeRepoServer()
    server.backups["b1"] = {"config": "cfg", "status": "running"}
    r = _repo(server, tmp_path)
    options = SnapshotOptions(readers=1, sealers=1, uploaders=1, pack_size=256 * 1024)
    pipeline = BlobPipeline(r, "b1", options=options)
    try:
        rng = random.Random(5)
        for _ in range(3):
            data = rng.randbytes(128 * 1024)
            pipeline._store(BlobType.DATA, r.keys.blob_id(data), data)
        deadline = time.monotonic() + 10
        while pipeline.stats.packs < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipeline.stats.packs == 1
        (uploader,) = pipeline._upload_threads
        deadline = time.monotonic() + 10
        while True:  # until the uploader waits for the next pack
            frame = sys._current_frames().get(uploader.ident or 0)
            held, waiting = [], False
            while frame is not None:
                held += [
                    v
                    for v in frame.f_locals.values()
                    if isinstance(v, Pack)
                    or (isinstance(v, list) and any(isinstance(x, Pack) for x in v))
                ]
                waiting = waiting or frame.f_code.co_name == "get"
                frame = frame.f_back
            if waiting or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert waiting
        assert held == []  # the uploaded pack (256 KiB here, 16 MiB in a real snapshot) is freed
    finally:
        pipeline.finish()


def test_sealers_wait_for_room_instead_of_holding_finished_packs(tmp_path: Path) -> None:
    server = FakeRepoServer()
    server.backups["b1"] = {"config": "cfg", "status": "running"}
    r = _repo(server, tmp_path)
    uploading, release = threading.Event(), threading.Event()
    upload = r.upload

    def slow_upload(*args: Any, **kwargs: Any) -> Any:
        uploading.set()
        release.wait(30)  # the uploader is busy until the test lets it go
        return upload(*args, **kwargs)

    r.upload = slow_upload  # type: ignore[method-assign]
    options = SnapshotOptions(
        readers=4, sealers=3, uploaders=1, max_queued_packs=1, pack_size=256 * 1024
    )
    pipeline = BlobPipeline(r, "b1", options=options)
    finished: list[str] = []  # the packs sealers finished and handed on (or wait to)
    queue_pack = pipeline._queue_pack

    def counted(pack: Pack) -> None:
        finished.append(pack.name)
        queue_pack(pack)

    pipeline._queue_pack = counted  # type: ignore[method-assign]
    rng = random.Random(6)
    blobs = [rng.randbytes(300 * 1024) for _ in range(8)]  # each fills a pack on its own

    def store(data: bytes) -> None:
        pipeline._store(BlobType.DATA, r.keys.blob_id(data), data)

    def until(done: Any) -> None:
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done()

    feeders = [threading.Thread(target=store, args=(b,), daemon=True) for b in blobs[2:]]
    try:
        store(blobs[0])
        until(uploading.is_set)  # the only uploader is busy with the first pack
        store(blobs[1])
        until(lambda: len(pipeline._packs.queue) == 1)  # and the queue is full
        for t in feeders:
            t.start()
        time.sleep(1.0)  # the sealers have had the time to seal all they would
        # One pack in the upload and one queued; no sealer waits with another in hand.
        assert len(finished) == 2
    finally:
        release.set()
        for t in feeders:
            t.join(30)
        pipeline.finish()
    assert pipeline.stats.packs == len(blobs)


def test_one_large_file_is_streamed_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunker_module, "READ_WHOLE", 64 * 1024)  # stream files above 64 KiB
    chunker = Chunker(seed=1)
    rng = random.Random(4)
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(rng.randbytes(2 * MiB))
    spans: dict[str, tuple[float, float]] = {}

    def stream(name: str) -> None:
        with open(tmp_path / name, "rb", buffering=0) as fh:
            first = None
            for _ in chunker.chunks(fh, 2 * MiB):
                first = first or time.monotonic()
                time.sleep(0.02)
            assert first is not None
            spans[name] = (first, time.monotonic())

    with open(tmp_path / "c", "rb", buffering=0) as fh:  # stopped early, then closed
        with closing(chunker.chunks(fh, 2 * MiB)) as left:
            next(left)
    threads = [threading.Thread(target=stream, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(spans) == ["a", "b"]
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a1 <= b0 or b1 <= a0  # never both at once: each holds a 16 MiB buffer
