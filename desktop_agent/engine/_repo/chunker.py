"""Content-defined chunking (FastCDC 2020 from ``pyfastcdc``, whose cutting runs without the GIL),
keyed by the repository's chunker seed so that chunk boundaries differ between repositories."""

from __future__ import annotations

import io
import threading
from collections.abc import Generator
from typing import BinaryIO

import pyfastcdc

from .format import CHUNK_AVG, CHUNK_MAX, CHUNK_MIN

# Files up to this size are read whole and cut in memory; larger ones are streamed.
READ_WHOLE = 32 * 1024 * 1024


class Chunker:
    """Cuts files into chunks. Thread-safe (one FastCDC state per thread)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._local = threading.local()
        # One large file is streamed at a time: each stream holds a buffer of twice the largest
        # chunk (16 MiB), and two readers streaming at once were part of a first snapshot's peak
        # memory. The caller closes the iterator (``contextlib.closing``) if it stops early.
        self._streams = threading.Lock()

    def _cdc(self) -> pyfastcdc.FastCDC:
        cdc: pyfastcdc.FastCDC | None = getattr(self._local, "cdc", None)
        if cdc is None:
            cdc = self._local.cdc = pyfastcdc.FastCDC(
                CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX, seed=self._seed
            )
        return cdc

    def chunks(self, fh: BinaryIO, size_hint: int) -> Generator[bytes, None, None]:
        """The chunks of an unbuffered binary file, in order. ``size_hint`` (the size the file
        had) picks reading it whole or streaming it; a file that grew meanwhile is still read to
        its end."""
        if size_hint <= READ_WHOLE:
            data = fh.read()
            if len(data) <= CHUNK_MIN:
                if data:
                    yield data
                return
            if len(data) <= READ_WHOLE:
                for c in self._cdc().cut_buf(data):
                    yield bytes(c.data)
                return
            fh = io.BufferedReader(_Chain(data, fh))  # type: ignore[arg-type]
        with self._streams:
            for c in self._cdc().cut_stream(fh):
                yield bytes(c.data)


class _Chain(io.RawIOBase):
    """A raw reader giving ``head`` and then the rest of ``fh``."""

    def __init__(self, head: bytes, fh: BinaryIO) -> None:
        self._head = memoryview(head)
        self._fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._fh.readinto(b)  # type: ignore[attr-defined, no-any-return]
