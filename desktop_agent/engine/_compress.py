"""Compression of the tar stream, in parallel, and the ordered pipe that carries the compressed bytes
to the uploader.

``gzip``: the tar stream is cut into blocks that a thread pool deflates in parallel (zlib releases the
GIL), as pigz does: each block is primed with the previous block's last 32 KiB as its dictionary and
ends with a sync flush, so the blocks concatenate into ONE ordinary gzip member (the ratio is close to
single-threaded gzip's, and every gzip reader can read it). A block whose samples do not compress is
stored instead of deflated: zlib spends as long failing to compress random data (photos, videos,
archives) as compressing text, for nothing.

``zstd``: the ``zstandard`` package with its own worker threads (``.tar.zst``).

``none``: plain ``.tar``.

Whatever the format, the output goes through ``OrderedPipe``: a bounded queue of pending blocks that a
collector thread resolves in order and hands to the sink. The bound is the back-pressure that keeps
memory flat when the upload is slower than the archiver.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

__all__ = [
    "ArchiveFormat",
    "Compressor",
    "GzipCompressor",
    "OrderedPipe",
    "PlainCompressor",
    "ZstdCompressor",
    "archive_extension",
    "make_compressor",
]

ArchiveFormat = Literal["gzip", "zstd", "none"]

GZIP_BLOCK = 256 * 1024
ZSTD_CHUNK = 1024 * 1024
ZSTD_JOB = 1024 * 1024
PLAIN_CHUNK = 1024 * 1024
WINDOW = 32 * 1024
_SAMPLES = 8
_SAMPLE = 1024
_STORE_RATIO = 0.95


def archive_extension(fmt: ArchiveFormat) -> str:
    """``.tar.gz``, ``.tar.zst`` or ``.tar``."""
    return {"gzip": ".tar.gz", "zstd": ".tar.zst", "none": ".tar"}[fmt]


class OrderedPipe:
    """A bounded, ordered queue between the compressor and the sink (the uploader).

    Items are compressed blocks or futures of them; a collector thread takes them in order, waits for
    each, and calls ``sink``. ``put`` blocks while ``capacity`` items are pending. If the sink raises,
    the error is kept, later items are dropped, and the next ``put`` or ``close`` raises it.
    """

    _END = object()

    def __init__(self, sink: Callable[[bytes], None], capacity: int) -> None:
        self._sink = sink
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, capacity))
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._drain, name="backapp-pipe", daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def put(self, item: bytes | Future[bytes]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every item reached the sink; raise the sink's error if there was one."""
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop whatever is pending and stop the collector (never raises)."""
        self._aborted = True
        self._queue.put(self._END)
        self._thread.join()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._error is not None or self._aborted:
                if isinstance(item, Future):
                    item.cancel()
                continue
            try:
                data = item.result() if isinstance(item, Future) else item
                assert isinstance(data, bytes | bytearray | memoryview)
                if data:
                    self._sink(bytes(data) if not isinstance(data, bytes) else data)
            except BaseException as exc:  # handed to the producer through put()/close()
                self._error = exc


class Compressor:
    """Takes the tar stream through ``write`` in pieces of any size, puts compressed output into an
    ``OrderedPipe``. ``close`` flushes; ``abort`` drops everything."""

    def __init__(self, pipe: OrderedPipe, block_size: int) -> None:
        self.pipe = pipe
        self.block_size = block_size
        self._buffer = bytearray()
        self.bytes_in = 0

    #: Whether a large write may go to ``_block`` as it is (any block size works for the format).
    passthrough = False

    def write(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.passthrough and len(data) >= self.block_size // 2:
            # A file's content in large chunks: no copy into the buffer and out again.
            if self._buffer:
                self._block(bytes(self._buffer))
                self._buffer = bytearray()
            self._block(data)
            return
        if not self._buffer and len(data) == self.block_size:
            self._block(data)
            return
        self._buffer += data
        if len(self._buffer) >= self.block_size:
            view = memoryview(self._buffer)
            whole = len(view) - len(view) % self.block_size
            for start in range(0, whole, self.block_size):
                self._block(bytes(view[start : start + self.block_size]))
            rest = bytes(view[whole:])
            view.release()
            self._buffer = bytearray(rest)

    def close(self) -> None:
        if self._buffer:
            self._block(bytes(self._buffer))
            self._buffer = bytearray()
        self._finish()

    def abort(self) -> None:
        self._buffer = bytearray()

    def _block(self, block: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass


class PlainCompressor(Compressor):
    """No compression: ``.tar``."""

    passthrough = True

    def __init__(self, pipe: OrderedPipe, block_size: int = PLAIN_CHUNK) -> None:
        super().__init__(pipe, block_size)

    def _block(self, block: bytes) -> None:
        self.pipe.put(block)


def _looks_incompressible(block: bytes) -> bool:
    """Whether evenly spread samples of ``block`` refuse to compress (random or already-compressed
    data). Costs about 1-2 % of deflating the block."""
    if len(block) < 4 * WINDOW:
        return False
    step = len(block) // _SAMPLES
    sample = b"".join(block[i * step : i * step + _SAMPLE] for i in range(_SAMPLES))
    return len(zlib.compress(sample, 1)) >= _STORE_RATIO * len(sample)


def deflate_block(block: bytes, zdict: bytes, level: int, adaptive: bool = True) -> bytes:
    """Raw deflate of one block, primed with ``zdict`` (the previous 32 KiB of the stream) and ended
    with a sync flush, so consecutive blocks concatenate into one valid deflate stream."""
    if adaptive and level > 0 and _looks_incompressible(block):
        level = 0
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)


# gzip member header: magic, CM=deflate, no flags, mtime 0, no extra flags, OS=unix
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


class GzipCompressor(Compressor):
    """pigz-style parallel gzip: one gzip member, blocks deflated on ``threads`` threads."""

    def __init__(
        self,
        pipe: OrderedPipe,
        *,
        level: int = 6,
        threads: int | None = None,
        block_size: int = GZIP_BLOCK,
        adaptive: bool = True,
    ) -> None:
        super().__init__(pipe, block_size)
        self.level = level
        self.adaptive = adaptive
        self._pool = ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 1, thread_name_prefix="backapp-gzip"
        )
        self._crc = 0
        self._dict = b""
        self.pipe.put(GZIP_HEADER)

    def _block(self, block: bytes) -> None:
        self._crc = zlib.crc32(block, self._crc)
        future = self._pool.submit(deflate_block, block, self._dict, self.level, self.adaptive)
        self._dict = block[-WINDOW:]
        self.pipe.put(future)

    def _finish(self) -> None:
        # An empty final block (BFINAL set) ends the deflate stream; then CRC-32 and size mod 2**32.
        tail = zlib.compressobj(self.level, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
        self.pipe.put(tail + struct.pack("<II", self._crc & 0xFFFFFFFF, self.bytes_in & 0xFFFFFFFF))
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        super().abort()
        self._pool.shutdown(wait=False, cancel_futures=True)


class ZstdCompressor(Compressor):
    """zstd with the library's own worker threads: ``.tar.zst``."""

    passthrough = True

    def __init__(
        self,
        pipe: OrderedPipe,
        *,
        level: int = 3,
        threads: int | None = None,
        block_size: int = ZSTD_CHUNK,
    ) -> None:
        super().__init__(pipe, block_size)
        try:
            import zstandard
        except ImportError as exc:  # pragma: no cover - zstandard is a dependency
            raise RuntimeError("zstd archives need the 'zstandard' package") from exc
        workers = threads or os.cpu_count() or 1
        # An explicit job size bounds the worker buffers (~20 MiB in all with 1 MiB jobs on two
        # cores; zstd's own choice grows with the level: ~90 MiB at level 3) for ~5-10 % of speed.
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            threads=workers if workers > 1 else 0,
            job_size=ZSTD_JOB if workers > 1 else 0,
            write_checksum=True,
        )
        cctx = zstandard.ZstdCompressor(compression_params=params)
        self._cobj = cctx.compressobj()
        self._zstd = zstandard

    def _block(self, block: bytes) -> None:
        out = self._cobj.compress(block)
        if out:
            self.pipe.put(out)

    def _finish(self) -> None:
        out = self._cobj.flush(self._zstd.COMPRESSOBJ_FLUSH_FINISH)
        if out:
            self.pipe.put(out)


def make_compressor(
    fmt: ArchiveFormat,
    pipe: OrderedPipe,
    *,
    gzip_level: int = 6,
    zstd_level: int = 3,
    threads: int | None = None,
) -> Compressor:
    if fmt == "gzip":
        return GzipCompressor(pipe, level=gzip_level, threads=threads)
    if fmt == "zstd":
        return ZstdCompressor(pipe, level=zstd_level, threads=threads)
    return PlainCompressor(pipe)
