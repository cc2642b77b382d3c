"""The uploader: receives the archive's bytes in order and gets them into storage.

It hashes (SHA-256) and counts the stream as it passes. The first ``multipart_threshold`` bytes are
held in memory: if the archive ends within them, it goes up in one PUT whose size and SHA-256 the
server signs into the URL (``backup/start`` is called only then, with the exact size). Otherwise the
uploader starts a multipart upload and cuts the stream into parts, each uploaded by a worker thread
through its own pre-signed URL; at most ``concurrency`` parts are in flight (the next part waits), so
memory stays at about ``(concurrency + 1) * part_size`` whatever the archive size. A failed part is
re-sent with a fresh URL, with backoff; any failure or cancel aborts the multipart upload.

Storage that blips or hangs: a request in which no byte moves for a while is abandoned
(``HttpStorage``'s stall timeout) and counts as a failed try. Tries go on, with backoff, for as long
as ``retry_budget`` seconds from the part's first failure (an outage of a few minutes costs a pause,
not the backup), while ``on_waiting`` says what the upload waits for; ``on_resumed`` when it moves
again. Past the budget the backup fails, and the reason says what storage did.

Each part carries a checksum that the storage checks against its body: a CRC32 when the server lists
``part-crc32`` in its heartbeat ``features`` (about twice as cheap as SHA-256, which the whole
archive still gets), else a SHA-256 as every server understands.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from ._cancel import CancelToken
from ._errors import AgentError, BackupCancelled, ConflictError, NetworkError, StorageError
from ._parts import (
    MIB,
    choose_part_size,
    crc32_b64,
    crc32_b64_of,
    numbered_filename,
)
from ._transport.retry import RetryPolicy
from .protocol import (
    AbortUpload,
    Body,
    CompleteUpload,
    ControlPlane,
    SignPart,
    StartBackup,
    StartResponse,
    Storage,
    UploadedPart,
)

__all__ = [
    "UploadOptions",
    "UploadResult",
    "Uploader",
    "Waiting",
]

log = logging.getLogger("desktop_agent.engine.upload")

MAX_FILENAME_ATTEMPTS = 5
PART_CRC32 = "part-crc32"
"""The server feature (heartbeat ``features``): multipart parts may carry a CRC32."""
BACKUP_CANCELLED = "backup-cancelled"
"""The server feature: ``backup/complete`` takes ``status: cancelled`` (else a cancel is sent as
``failed``, which an older server understands)."""


def server_features(plane: object) -> frozenset[str]:
    """What the plane's server advertised in its last heartbeat (``ApiClient.server_features``);
    nothing when unknown."""
    features = getattr(plane, "server_features", None)
    return features if isinstance(features, frozenset) else frozenset()


def _after_attempts(exc: StorageError | NetworkError, attempts: int) -> AgentError:
    """``exc`` again, its message saying how many attempts were made."""
    message = f"{exc} (after {attempts} attempts)"
    if isinstance(exc, StorageError):
        return StorageError(message, status=exc.status, transient=exc.transient)
    return NetworkError(message)


@dataclass(frozen=True, slots=True)
class UploadOptions:
    multipart_threshold: int = 16 * MIB
    """Archives up to this size go up in one PUT (held in memory); larger ones in parts."""
    part_size: int | None = None
    """Part size; ``None``: the server's suggestion or 16 MiB."""
    concurrency: int = 2
    """Parts in flight at once. Memory: about ``(concurrency + 1) * part_size``."""
    memory_budget: int = 96 * MIB
    """Parts in flight are limited so that they fit in this (at least one part is always allowed),
    whatever the part size grows to for a huge archive; one more part is being filled meanwhile."""
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=6))
    """The backoff between tries of a part (each with a fresh URL) or a single PUT; its
    ``max_attempts`` bounds them only when ``retry_budget`` is ``None``."""
    retry_budget: float | None = 600.0
    """Seconds a part (or a single PUT) is retried through transient failures, from its first
    one, before the backup fails; ``None``: ``retry.max_attempts`` tries instead."""
    part_checksum: Literal["auto", "sha256"] = "auto"
    """``auto``: CRC32 parts when the server advertises ``part-crc32``, else SHA-256;
    ``sha256``: always SHA-256 parts."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A failed try that will be tried again (``Uploader.on_waiting``)."""

    waiting_for: Literal["storage", "server"]
    reason: str
    waited: float
    """Seconds since the oldest trouble still going on began."""
    retry_in: float
    gives_up_in: float | None


def _gave_up(what: str, exc: AgentError, waited: float) -> str:
    """Why the upload stops, in words."""
    minutes = f"{waited / 60:.0f} min" if waited >= 90 else f"{waited:.0f} s"
    target = "the BackApp server" if isinstance(exc, NetworkError) else "storage"
    return f"gave up on {what} after {minutes} of trying: {target} kept failing ({exc})"


@dataclass(frozen=True, slots=True)
class UploadResult:
    log_id: str
    filename: str
    s3_path: str
    size: int
    sha256: str
    multipart: bool
    parts: int


class Uploader:
    """The sink of the archive stream (see the module docstring). ``write`` runs on the pipe's
    collector thread; ``finish`` and ``abort`` on the caller's."""

    def __init__(
        self,
        plane: ControlPlane,
        storage: Storage,
        *,
        config_id: str,
        filename: str,
        estimated_size: int,
        options: UploadOptions | None = None,
        cancel: CancelToken | None = None,
        on_started: Callable[[str, bool], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plane = plane
        self._storage = storage
        self.config_id = config_id
        self.filename = filename
        self._base_filename = filename
        self.estimated_size = estimated_size
        self.options = options or UploadOptions()
        self._cancel = cancel
        self.on_started = on_started
        self.on_progress = on_progress
        self.on_waiting: Callable[[Waiting], None] | None = None
        """Each failed try that will be tried again (on the uploading thread)."""
        self.on_resumed: Callable[[float], None] | None = None
        """Bytes move again after waiting (the seconds waited)."""
        self._sleep = sleep or (cancel.wait if cancel is not None else time.sleep)
        self._clock = clock
        self._troubled: set[str] = set()
        """What is being retried now (parts, the single upload)."""
        self._trouble_began = 0.0
        """When the first of them began to fail."""

        self.log_id: str | None = None
        self.start_attempted = False
        """``backup/start`` was called (whether or not it succeeded)."""
        self.s3_path = ""
        self.multipart = False
        self._sha = hashlib.sha256()
        self._crc = 0
        """CRC32 of the stream since it became multipart (from its first byte), for storage to
        check the assembled object against; computed here, with the SHA-256, not from the parts."""
        self.size = 0
        # Until the archive outgrows the threshold, its pieces are kept as they came (no copies):
        # they are the body of a single PUT, or get copied into the first parts.
        self._pending: list[bytes] = []
        self._pending_size = 0
        # The part being filled: one buffer per part, filled in place, handed to a worker when full.
        self._part: bytearray | None = None
        # Part buffers whose upload is over, for the next parts: a new 16 MiB buffer per part would
        # leave the allocator's heaps fragmented (tens of MiB of peak memory for nothing).
        self._spare: list[bytearray] = []
        self._fill = 0

        self._part_size = 0
        self._part_checksum = "sha256"
        """What the parts carry, as the server's ``backup/start`` answer says."""
        self._max_parts = 10_000
        self._next_part = 1
        self._pool: ThreadPoolExecutor | None = None
        self._slots: threading.Semaphore | None = None
        self._futures: list[Future[UploadedPart]] = []
        self._failure: BaseException | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._retried = False
        self.uploaded = 0
        self._parts_done = 0

    # -- the stream ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Take the next bytes of the archive (in order)."""
        self._check()
        self._sha.update(data)
        self.size += len(data)
        if self.multipart:
            self._crc = zlib.crc32(data, self._crc)
            self._append(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > self.options.multipart_threshold:
            self._begin_multipart()
            for piece in self._pending:
                self._crc = zlib.crc32(piece, self._crc)
            pending, self._pending, self._pending_size = self._pending, [], 0
            pending.reverse()
            while pending:  # released piece by piece as they are copied into parts
                self._append(pending.pop())

    def finish(self) -> UploadResult:
        """The archive is complete: upload what is left, assemble the parts, return the result."""
        self._check()
        sha256 = self._sha.hexdigest()
        if not self.multipart:
            body, self._pending = self._pending, []
            response = self._start(multipart=False, size=self._pending_size, sha256=sha256)
            self._put_single(response, body, self._pending_size)
            parts = 1
        else:
            if self._part is not None and self._fill:
                self._submit(memoryview(self._part)[: self._fill])
                self._part = None
            uploaded = self._wait_parts()
            parts = len(uploaded)
            assert self.log_id is not None
            # No whole-object checksum for SHA-256 parts (S3 has none).
            crc32 = crc32_b64_of(self._crc) if self._part_checksum == "crc32" else None
            stored = self._plane.complete_upload(
                CompleteUpload(log_id=self.log_id, parts=uploaded, crc32=crc32)
            )
            if stored >= 0 and stored != self.size:
                raise StorageError(
                    f"storage assembled {stored} bytes but the agent sent {self.size}",
                    transient=False,
                )
        assert self.log_id is not None
        return UploadResult(
            self.log_id, self.filename, self.s3_path, self.size, sha256, self.multipart, parts
        )

    def stop(self) -> None:
        """Stop uploading: cancel pending parts, wait for running ones, drop the buffer. Never
        raises; does not tell the server (see ``abort``)."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = []
        self._part = None
        self._spare = []

    def abort(self, reason: str) -> None:
        """``stop``, then abort the multipart upload on the server (best effort; never raises)."""
        self.stop()
        if self.multipart and self.log_id is not None:
            try:
                self._plane.abort_upload(AbortUpload(log_id=self.log_id, reason=reason[:4000]))
            except AgentError as exc:
                log.warning("could not abort the multipart upload of log %s: %s", self.log_id, exc)

    # -- internals ----------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._cancel is not None:
            self._cancel.raise_if_cancelled()

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._part is None:
                with self._lock:
                    spare = self._spare.pop() if self._spare else None
                self._part = spare if spare is not None else bytearray(self._part_size)
                self._fill = 0
            n = min(len(view), self._part_size - self._fill)
            self._part[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._part_size:
                part, self._part = self._part, None
                self._submit(part)

    def _start(
        self,
        *,
        multipart: bool,
        size: int | None = None,
        sha256: str | None = None,
        part_checksum: str | None = None,
    ) -> StartResponse:
        self.start_attempted = True
        for attempt in range(1, MAX_FILENAME_ATTEMPTS + 1):
            try:
                response = self._plane.start_backup(
                    StartBackup(
                        config_id=self.config_id,
                        filename=self.filename,
                        filesize=max(self.estimated_size, size or 0),
                        multipart=multipart,
                        size=size,
                        sha256=sha256,
                        part_checksum=part_checksum,
                    )
                )
            except ConflictError:
                # The key already holds a backup (two runs in the same second): take the next name.
                if attempt == MAX_FILENAME_ATTEMPTS:
                    raise
                self.filename = numbered_filename(self._base_filename, attempt + 1)
                continue
            self.log_id = response.log_id
            self.s3_path = response.upload.s3_path
            if self.on_started is not None:
                self.on_started(response.log_id, multipart)
            return response
        raise AssertionError("unreachable")

    def _put_single(self, response: StartResponse, body: list[bytes], size: int) -> None:
        ticket = response.upload
        if ticket.method.upper() != "PUT" or not ticket.url:
            raise StorageError(
                f"the server offered an upload method this agent cannot use: {ticket.method}"
            )
        headers = ticket.headers or {}
        self._retrying(lambda: self._storage.put(ticket.url or "", body, headers), "upload")
        self.uploaded = size
        self._parts_done = 1
        if self.on_progress is not None:
            self.on_progress(self.uploaded, 1)

    def _retrying(self, attempt: Callable[[], str | None], what: str) -> str | None:
        """``attempt()`` until it succeeds: a transient failure is tried again, with backoff,
        within the time budget (else the try count); the rest raise at once."""
        retry, budget = self.options.retry, self.options.retry_budget
        began: float | None = None
        n = 0
        while True:
            if self._cancel is not None:
                self._cancel.raise_if_cancelled()
            if self._stopping.is_set():
                raise BackupCancelled("upload stopped", deliberate=False)
            try:
                result = attempt()
            except (StorageError, NetworkError) as exc:
                # NetworkError: the server (which hands out part URLs) was unreachable even after
                # the API client's own retries; keep trying with the part, never the whole archive.
                transient = isinstance(exc, NetworkError) or exc.transient
                if not transient:
                    raise
                now = self._clock()
                began = now if began is None else began
                waited = now - began
                if budget is None:
                    if n + 1 >= retry.max_attempts:
                        raise _after_attempts(exc, retry.max_attempts) from exc
                    left = None
                else:
                    left = budget - waited
                    if left <= 0:
                        raise StorageError(_gave_up(what, exc, waited), transient=False) from exc
                delay = retry.delay(n)
                if left is not None:
                    delay = min(delay, left)
                self._retry_said(what, exc, delay, retry.max_attempts, budget)
                self._waiting(what, exc, began, now, delay, left)
                self._sleep(delay)
                n += 1
            else:
                if began is not None:
                    self._resumed(what)
                return result

    def _waiting(
        self,
        what: str,
        exc: AgentError,
        began: float,
        now: float,
        delay: float,
        left: float | None,
    ) -> None:
        with self._lock:
            if not self._troubled:
                self._trouble_began = began
            self._troubled.add(what)
            waited = now - self._trouble_began
        if self.on_waiting is not None:
            self.on_waiting(
                Waiting(
                    waiting_for="server" if isinstance(exc, NetworkError) else "storage",
                    reason=str(exc),
                    waited=waited,
                    retry_in=delay,
                    gives_up_in=None if left is None else max(0.0, left - delay),
                )
            )

    def _resumed(self, what: str) -> None:
        """``what`` went through after failing; once nothing else is failing, say so."""
        with self._lock:
            self._troubled.discard(what)
            if self._troubled:
                return
            waited = self._clock() - self._trouble_began
        if self.on_resumed is not None:
            self.on_resumed(waited)

    def _retry_said(
        self, what: str, exc: Exception, delay: float, attempts: int, budget: float | None
    ) -> None:
        """One warning for the upload's first retry; the others at info (``-v``): a storage outage
        would otherwise print a warning per part and attempt before the one failure."""
        with self._lock:
            first, self._retried = not self._retried, True
        if first:
            limit = f"up to {attempts} attempts" if budget is None else f"for up to {budget:.0f} s"
            log.warning(
                "%s failed (%s); trying again (%s per part; -v shows each retry)",
                what,
                exc,
                limit,
            )
        else:
            log.info("%s failed (%s); trying again in %.1fs", what, exc, delay)

    def _begin_multipart(self) -> None:
        crc32 = self.options.part_checksum == "auto" and PART_CRC32 in server_features(self._plane)
        response = self._start(multipart=True, part_checksum="crc32" if crc32 else None)
        ticket = response.upload
        if ticket.method.upper() != "MULTIPART":
            raise StorageError(
                f"the server did not start a multipart upload (method {ticket.method})"
            )
        self._part_checksum = "crc32" if crc32 and ticket.part_checksum == "crc32" else "sha256"
        self.multipart = True
        self._max_parts = ticket.max_parts or 10_000
        self._part_size = choose_part_size(
            configured=self.options.part_size,
            suggested=ticket.part_size,
            estimated_size=max(self.estimated_size, self._pending_size),
            max_parts=self._max_parts,
        )
        in_flight = max(
            1, min(self.options.concurrency, self.options.memory_budget // self._part_size)
        )
        self._slots = threading.Semaphore(in_flight)
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="backapp-upload")

    def _submit(self, data: Body) -> None:
        assert self._slots is not None and self._pool is not None
        while not self._slots.acquire(timeout=0.2):
            self._check()
        try:
            self._check()
            number = self._next_part
            if number > self._max_parts:
                raise StorageError(
                    f"the archive needs more than {self._max_parts} parts of {self._part_size} bytes"
                )
            self._next_part += 1
            future = self._pool.submit(self._upload_part, number, data)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._part_done)
        self._futures.append(future)

    def _part_done(self, future: Future[UploadedPart]) -> None:
        assert self._slots is not None
        self._slots.release()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            with self._lock:
                if self._failure is None:
                    self._failure = exc
            return

    def _upload_part(self, number: int, data: Body) -> UploadedPart:
        assert self.log_id is not None
        log_id = self.log_id
        # Both release the GIL while they hash a part, so parts hash in parallel with the archiver.
        crc32 = crc32_b64(data) if self._part_checksum == "crc32" else None
        sha256 = hashlib.sha256(data).hexdigest() if crc32 is None else None

        def attempt() -> str | None:
            # A fresh URL for every attempt: the previous one may have expired.
            ticket = self._plane.part_url(
                SignPart(
                    log_id=log_id, part_number=number, size=len(data), sha256=sha256, crc32=crc32
                )
            )
            return self._storage.put(ticket.url, data, ticket.headers or {})

        etag = self._retrying(attempt, f"part {number}")
        if not etag:
            raise StorageError(f"storage accepted part {number} but returned no ETag")
        with self._lock:
            self.uploaded += len(data)
            self._parts_done += 1
            uploaded, done = self.uploaded, self._parts_done
            # ``put`` is over: the buffer can hold a later part (the storage must not keep it).
            if isinstance(data, bytearray) and len(data) == self._part_size:
                self._spare.append(data)
        if self.on_progress is not None:
            self.on_progress(uploaded, done)
        return UploadedPart(part_number=number, etag=etag, sha256=sha256, crc32=crc32)

    def _wait_parts(self) -> list[UploadedPart]:
        parts: list[UploadedPart] = []
        for future in self._futures:
            while True:
                try:
                    parts.append(future.result(timeout=0.2))
                    break
                except TimeoutError:
                    self._check()
        assert self._pool is not None
        self._pool.shutdown(wait=True)
        return sorted(parts, key=lambda p: p.part_number)
