"""Getting the stored object: the ``RestoreSource`` seam (the server that hands out pre-signed URLs)
and ``ResumableDownload``, the object behind such a URL as a stream that survives interruptions.

An interrupted download resumes where it stopped (``Range: bytes=N-``) and keeps feeding the same
reader, so no byte is downloaded twice; an expired URL (403) is replaced with a fresh one. The bytes
are hashed as they arrive, for ``verification``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import httpx

from .._cancel import CancelToken
from .._errors import IntegrityError, RestoreError
from .._transport.redact import redact_url
from .._transport.retry import RETRYABLE_EXCEPTIONS, RETRYABLE_STATUSES, RetryPolicy
from .._transport.throttle import Throttle
from ..protocol import BackupInfo, RestoreTicket

__all__ = ["ResumableDownload", "RestoreSource"]

log = logging.getLogger("desktop_agent.engine.restore")


class RestoreSource(Protocol):
    """What a restore needs from the BackApp server (``ApiClient`` implements it)."""

    def list_backups(
        self, *, config_id: str | None = None, limit: int = 100
    ) -> list[BackupInfo]: ...

    def restore_ticket(self, backup_id: str) -> RestoreTicket: ...


class ResumableDownload(io.RawIOBase):
    """The object behind a pre-signed GET as a readable stream, hashed as it is read.

    On a network error it reopens the URL with ``Range: bytes=N-`` and goes on from byte ``N``;
    a 403 (the URL expired) asks ``fresh_url`` for a new one. Failures without progress are bounded
    by ``retry``.
    """

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        size: int,
        *,
        fresh_url: Callable[[], str],
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        cancel: CancelToken | None = None,
        limit: Throttle | None = None,
    ) -> None:
        super().__init__()
        self._limit = limit
        self._http = http
        self._url = url
        self._fresh_url = fresh_url
        self.size = size
        self._retry = retry
        self._sleep = sleep
        self._cancel = cancel
        self.position = 0
        self.resumed = 0
        self.sha256 = hashlib.sha256()
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = memoryview(b"")
        self._skip = 0
        self._queue: queue.Queue[bytes | BaseException | None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failures = 0
        self._eof = False

    @property
    def at_eof(self) -> bool:
        return self._eof

    def readable(self) -> bool:
        return True

    def start(self, depth: int = 16) -> None:
        """Download ahead in a thread (at most ``depth`` chunks of ~64 KiB): the network and the
        hash overlap the decompression and the writing, as ``curl | tar`` overlaps them."""
        self._queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._pump, name="restore-download", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._queue is not None
        while not self._stop.is_set():
            try:
                item: bytes | BaseException | None = self._produce()
            except BaseException as exc:  # handed to the reader, which raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes):
                return

    def _take(self) -> bytes | None:
        if self._queue is None:
            return self._produce()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        return item

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if self._eof:
                return 0
            chunk = self._take()
            if chunk is None:
                self._eof = True
                return 0
            self._pending = memoryview(chunk)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        """Read (and hash) whatever is left: the bytes after the tar's end still count."""
        self._pending = memoryview(b"")
        while not self._eof:
            if self._take() is None:
                self._eof = True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._close_response()
        super().close()

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response, self._chunks = None, None

    def _produce(self) -> bytes | None:
        """The next piece of the object (hashed), or ``None`` at its end."""
        while True:
            if self._cancel is not None:
                self._cancel.raise_if_cancelled()
            if self._chunks is None:
                if self.position >= self.size:
                    return None
                self._open()
                assert self._chunks is not None
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._close_response()
                if self.position < self.size:  # the body ended early: ask for the rest
                    self._failed(f"the download ended at byte {self.position} of {self.size}")
                    continue
                return None
            except RETRYABLE_EXCEPTIONS as exc:
                self._close_response()
                self._failed(f"{type(exc).__name__}: {exc}")
                continue
            if self._skip:
                dropped = min(self._skip, len(chunk))
                chunk, self._skip = chunk[dropped:], self._skip - dropped
            if not chunk:
                continue
            self.position += len(chunk)
            self._failures = 0
            if self.position > self.size:
                raise IntegrityError(
                    f"the stored object is larger than the backup's recorded size ({self.size} "
                    "bytes)"
                )
            self.sha256.update(chunk)
            if self._limit is not None:
                self._limit.take(len(chunk))
            return chunk

    def _failed(self, why: str) -> None:
        self._failures += 1
        if self._failures >= self._retry.max_attempts:
            raise RestoreError(
                f"the download of {redact_url(self._url)} failed at byte {self.position} of "
                f"{self.size} after {self._failures} attempts: {why}"
            )
        delay = self._retry.delay(self._failures - 1)
        log.warning(
            "download interrupted at byte %d (%s); resuming in %.1fs", self.position, why, delay
        )
        self.resumed += 1
        self._sleep(delay)

    def _open(self) -> None:
        while True:
            headers = {"Range": f"bytes={self.position}-"} if self.position else {}
            try:
                request = self._http.build_request("GET", self._url, headers=headers)
                response = self._http.send(request, stream=True)
            except RETRYABLE_EXCEPTIONS as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                continue
            except httpx.HTTPError as exc:
                raise RestoreError(f"download of {redact_url(self._url)} failed: {exc}") from exc
            status = response.status_code
            if status == 200 or (status == 206 and self.position):
                if status == 206:
                    start = response.headers.get("Content-Range", "").removeprefix("bytes ")
                    if not start.startswith(f"{self.position}-"):
                        response.close()
                        raise RestoreError(f"storage answered the wrong range ({start})")
                else:
                    self._skip = self.position  # Range ignored: drop what we already have
                self._response = response
                # A transport that answered with a finished body (httpx.MockTransport) is read.
                consumed = response.is_stream_consumed
                self._chunks = iter([response.content]) if consumed else response.iter_raw()
                return
            response.close()
            if status == 416:
                raise IntegrityError(
                    f"the stored object is shorter than the backup's recorded size: it ends at "
                    f"byte {self.position} of {self.size}"
                )
            if status == 403:
                self._failed("storage refused the URL (expired?); asking for a fresh one")
                self._url = self._fresh_url()
                continue
            if status == 404:
                raise RestoreError("the backup's object is missing from storage")
            if status in RETRYABLE_STATUSES or status >= 500:
                self._failed(f"storage answered {status}")
                continue
            raise RestoreError(f"storage refused the download of {redact_url(self._url)}: {status}")
