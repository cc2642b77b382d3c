"""Compression of the tar stream, in parallel, and the ordered pipe that carries the compressed bytes
to the uploader.

``gzip``: the tar stream is cut into blocks that a thread pool deflates in parallel (zlib releases the
GIL), as pigz does: each block is primed with the previous block's last 32 KiB as its dictionary and
ends with a sync flush, so the blocks concatenate into ONE ordinary gzip member (the ratio is close to
single-threaded gzip's, and every gzip reader can read it). Data that does not compress (photos,
videos, archives, encrypted files) is written as deflate *stored* blocks instead of being deflated:
zlib spends as long failing to compress random bytes as compressing text, for nothing. Two tests find
it: a whole block whose samples do not compress (large files), and the content of a small file that
the archiver marks (``write_content``) whose byte histogram is flat (many small files, where a block
mixes text and photos).

``zstd``: the same thread pool compresses independent zstd frames of ``ZSTD_BLOCK`` (2 MiB) bytes;
a ``.tar.zst`` is their concatenation, which every zstd reader decodes as one stream (the format
allows any number of frames). Each frame starts afresh, which costs ratio at level 3 (+3.5 % on
50,000 small files against one stream, +0.8 % with 4 MiB frames; level 1 loses ~0.4 %); larger
frames cost memory instead: every frame in flight is held twice (4 MiB frames peaked at 160-175 MiB).

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
    "pipe_capacity",
]

ArchiveFormat = Literal["gzip", "zstd", "none"]

GZIP_BLOCK = 256 * 1024
ZSTD_BLOCK = 2 * 1024 * 1024
PLAIN_CHUNK = 1024 * 1024
WINDOW = 32 * 1024
_SAMPLES = 8
_SAMPLE = 1024
_STORE_RATIO = 0.95
#: File contents shorter than this are always deflated: storing saves less than restarting the
#: deflater after the stored run costs (~25 us, the time to deflate ~1.5 KiB).
MIN_STORED = 4 * 1024
_STORED_MAX = 0xFFFF


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


Span = tuple[int, int]
"""``(start, end)``: a file's content inside a block (offsets in the block)."""


class Compressor:
    """Takes the tar stream through ``write`` in pieces of any size, puts compressed output into an
    ``OrderedPipe``. ``close`` flushes; ``abort`` drops everything.

    ``write_content(data, start, end)`` is ``write(data)`` with a hint: ``data[start:end]`` is a
    file's content (so it may be worth testing for compressibility on its own)."""

    def __init__(self, pipe: OrderedPipe, block_size: int) -> None:
        self.pipe = pipe
        self.block_size = block_size
        self._buffer = bytearray()
        self._spans: list[Span] = []
        self.bytes_in = 0

    #: Whether a large write may go to ``_block`` as it is (any block size works for the format).
    passthrough = False

    @property
    def read_size(self) -> int:
        """How much of a large file the archiver should read at once: 1 MiB, or one whole block
        (which then goes to ``_block`` without a copy)."""
        return max(1024 * 1024, self.block_size)

    #: Whether ``_block`` uses the content spans (only gzip does).
    uses_spans = False

    def write(self, data: bytes) -> None:
        self._take(data, None)

    def write_content(self, data: bytes, start: int, end: int) -> None:
        self._take(data, (start, end) if self.uses_spans and end - start >= MIN_STORED else None)

    def _take(self, data: bytes, span: Span | None) -> None:
        size = self.block_size
        self.bytes_in += len(data)
        if self.passthrough and len(data) >= size:
            # A file's content in large chunks: no copy into the buffer and out again.
            if self._buffer:
                self._block(bytes(self._buffer), [])
                self._buffer = bytearray()
            self._block(data, [])
            return
        buffer = self._buffer
        if span is not None:
            base = len(buffer)
            self._spans.append((base + span[0], base + span[1]))
        if not buffer and len(data) == size:
            self._block(data, self._spans)
            self._spans = []
            return
        buffer += data
        if len(buffer) < size:
            return
        spans = self._spans
        whole = len(buffer) - len(buffer) % size
        with memoryview(buffer) as view:
            for start in range(0, whole, size):
                end = start + size
                mine: list[Span] = []
                while spans and spans[0][0] < end:
                    s, e = spans[0]
                    if e <= end:
                        mine.append((s - start, e - start))
                        spans.pop(0)
                    else:  # the rest of this file's content goes with the next block
                        mine.append((s - start, size))
                        spans[0] = (end, e)
                        break
                self._block(bytes(view[start:end]), mine)
            rest = bytes(view[whole:])
        self._buffer = bytearray(rest)
        self._spans = [(s - whole, e - whole) for s, e in spans]

    def close(self) -> None:
        if self._buffer:
            self._block(bytes(self._buffer), self._spans)
            self._buffer = bytearray()
            self._spans = []
        self._finish()

    def abort(self) -> None:
        self._buffer = bytearray()
        self._spans = []

    def _block(self, block: bytes, spans: list[Span]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass


class PlainCompressor(Compressor):
    """No compression: ``.tar``."""

    passthrough = True

    def __init__(self, pipe: OrderedPipe, block_size: int = PLAIN_CHUNK) -> None:
        super().__init__(pipe, block_size)

    def _block(self, block: bytes, spans: list[Span]) -> None:
        self.pipe.put(block)


def _looks_incompressible(block: bytes) -> bool:
    """Whether evenly spread samples of ``block`` refuse to compress (random or already-compressed
    data). Costs about 1-2 % of deflating the block."""
    if len(block) < 4 * WINDOW:
        return False
    step = len(block) // _SAMPLES
    sample = b"".join(block[i * step : i * step + _SAMPLE] for i in range(_SAMPLES))
    return len(zlib.compress(sample, 1)) >= _STORE_RATIO * len(sample)


def _deletions(bits: int, shift: int) -> list[bytes]:
    return [bytes(b for b in range(256) if (b >> shift) & bits == k) for k in range(bits)]


# Byte values by their top two bits, and by their bottom two bits (the last class is implied).
_HIGH_CLASSES = _deletions(3, 6)
_LOW_CLASSES = _deletions(3, 0)
_FLAT_SAMPLE = 1024
# Random bytes put 1/4 of a sample in each class (sd = sqrt(1024 * 3/16) ~ 13.9); text, code,
# executables, databases, UTF-16 are far off (letters, zeros, ASCII); deflate, JPEG, zstd, encrypted
# data are within 5 sd.
_FLAT_SLACK = 5 * (_FLAT_SAMPLE * 3 / 16) ** 0.5


def looks_flat(data: bytes | memoryview) -> bool:
    """Whether a 1 KiB sample from the middle of ``data`` has a flat byte histogram (at the grain of
    the top two and the bottom two bits of each byte): the mark of compressed or encrypted content,
    which deflate cannot shrink. About 5 us; only for ``data`` of at least 2 KiB.

    It misjudges content that repeats random-looking stretches (rare: deflate only sees 32 KiB back);
    the cost of a misjudgement is ratio, never correctness.
    """
    mid = len(data) // 2
    sample = bytes(data[mid - _FLAT_SAMPLE // 2 : mid + _FLAT_SAMPLE // 2])
    n = len(sample)
    if n < _FLAT_SAMPLE:
        return False
    quarter = n / 4
    for classes in (_HIGH_CLASSES, _LOW_CLASSES):
        rest = n
        for deleted in classes:
            count = n - len(sample.translate(None, deleted))
            if abs(count - quarter) > _FLAT_SLACK:
                return False
            rest -= count
        if abs(rest - quarter) > _FLAT_SLACK:
            return False
    return True


def stored_blocks(data: bytes | memoryview) -> bytes:
    """``data`` as deflate stored blocks (not final): byte-aligned, so they go between two deflate
    streams that each end with a sync flush."""
    view = memoryview(data)
    out = bytearray()
    for start in range(0, len(view), _STORED_MAX):
        chunk = view[start : start + _STORED_MAX]
        out += struct.pack("<BHH", 0, len(chunk), len(chunk) ^ 0xFFFF)
        out += chunk
    return bytes(out)


def _deflater(level: int, zdict: bytes) -> zlib._Compress:
    if len(zdict):
        return zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    return zlib.compressobj(level, zlib.DEFLATED, -15)


def deflate_block(
    block: bytes,
    zdict: bytes,
    level: int,
    adaptive: bool = True,
    spans: list[Span] | tuple[Span, ...] = (),
) -> bytes:
    """Raw deflate of one block, primed with ``zdict`` (the previous 32 KiB of the stream) and ended
    with a sync flush, so consecutive blocks concatenate into one valid deflate stream.

    With ``adaptive``, a block whose samples do not compress, and every file content in ``spans``
    (offsets in ``block``) whose histogram is flat, are written as stored blocks; the deflate
    restarts after each, without a dictionary.
    """
    if adaptive and level > 0:
        if not spans and _looks_incompressible(block):
            return stored_blocks(block)
        view = memoryview(block)
        raw = [(s, e) for s, e in spans if e - s >= MIN_STORED and looks_flat(view[s:e])]
        if raw:
            out: list[bytes] = []
            pos = 0
            for s, e in raw + [(len(block), len(block))]:
                if s > pos:
                    # After stored content the 32 KiB before ``pos`` are mostly that content, no
                    # use as a dictionary (and priming one costs more than it saves): start afresh.
                    history = zdict if pos == 0 else b""
                    c = _deflater(level, history)
                    out.append(c.compress(view[pos:s]))
                    out.append(c.flush(zlib.Z_SYNC_FLUSH))
                if e > s:
                    out.append(stored_blocks(view[s:e]))
                pos = e
            return b"".join(out)
    c = _deflater(level, zdict)
    return c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)


# gzip member header: magic, CM=deflate, no flags, mtime 0, no extra flags, OS=unix
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


class GzipCompressor(Compressor):
    """pigz-style parallel gzip: one gzip member, blocks deflated on ``threads`` threads."""

    uses_spans = True

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

    def _block(self, block: bytes, spans: list[Span]) -> None:
        self._crc = zlib.crc32(block, self._crc)
        future = self._pool.submit(
            deflate_block, block, self._dict, self.level, self.adaptive, spans
        )
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
    """Parallel zstd: blocks of ``block_size`` bytes compressed as independent frames (each with its
    checksum) on ``threads`` threads; ``.tar.zst``.

    Frames rather than zstd's own worker threads: the archiver never waits inside the compressor
    (only on the pipe's bound), and a compression context per thread is reused for every frame."""

    passthrough = True

    def __init__(
        self,
        pipe: OrderedPipe,
        *,
        level: int = 1,
        threads: int | None = None,
        block_size: int = ZSTD_BLOCK,
    ) -> None:
        super().__init__(pipe, block_size)
        try:
            import zstandard
        except ImportError as exc:  # pragma: no cover - zstandard is a dependency
            raise RuntimeError("zstd archives need the 'zstandard' package") from exc
        self._zstd = zstandard
        self.level = level
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 1, thread_name_prefix="backapp-zstd"
        )

    def _compress(self, block: bytes) -> bytes:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = self._zstd.ZstdCompressor(
                level=self.level, write_checksum=True, write_content_size=True
            )
        out: bytes = cctx.compress(block)
        return out

    def _block(self, block: bytes, spans: list[Span]) -> None:
        self.pipe.put(self._pool.submit(self._compress, block))

    def _finish(self) -> None:
        if not self.bytes_in:  # an empty stream is still one valid (empty) frame
            self.pipe.put(self._pool.submit(self._compress, b""))
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        super().abort()
        self._pool.shutdown(wait=False, cancel_futures=True)


def pipe_capacity(fmt: ArchiveFormat, threads: int) -> int:
    """How many blocks the ``OrderedPipe`` should hold for ``fmt`` on ``threads`` threads: enough to
    keep every thread busy while the collector hands the oldest block on (fewer makes the stages
    wait on each other; 3 instead of 5 for zstd on two cores: ~15 % slower). zstd's blocks are 8
    times gzip's, so one fewer: memory stays within its budget (8 GiB tree: see bench/README.md)."""
    return 2 * threads + 1 if fmt == "zstd" else 2 * threads + 2


def make_compressor(
    fmt: ArchiveFormat,
    pipe: OrderedPipe,
    *,
    gzip_level: int = 6,
    zstd_level: int = 1,
    threads: int | None = None,
) -> Compressor:
    if fmt == "gzip":
        return GzipCompressor(pipe, level=gzip_level, threads=threads)
    if fmt == "zstd":
        return ZstdCompressor(pipe, level=zstd_level, threads=threads)
    return PlainCompressor(pipe)
