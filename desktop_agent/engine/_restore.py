"""Restores: download one backup through a pre-signed GET, verify it, and extract it safely.

    restore: POST /api/agent/restore -> GET (streamed, resumed with Range) -> hash + decompress +
             untar into a hidden staging folder -> verify size and SHA-256 -> move into place

The archive is never written to disk and never held in memory: it is hashed while it streams into
the tar reader, and the members are written into a **staging folder** (hidden, beside or inside the
target, so the final move is a rename). Only when the whole object has been read and its size and
SHA-256 match what the server recorded is the staging folder moved into place; on any error (a hash
mismatch, a damaged archive, a network failure past the retries, a cancel) the staging folder is
removed and the target is left as it was. A half-written restore can therefore never look like a
good one.

An interrupted download resumes where it stopped (``Range: bytes=N-``) and keeps feeding the same
decompressor, so no byte is downloaded twice; an expired URL (403) is replaced with a fresh one.

Safety (tar-slip): members with absolute paths or ``..``, device files and FIFOs, hard links to
anything but a file already restored, and symbolic links that point outside the target are refused
and reported (``RestoreSkipped``); nothing is written through a symbolic link, and after extraction
every symbolic link is resolved on disk and removed if it leads outside the staging folder (this
catches chains of links that each look harmless). An in-place restore (``in_place=True``) writes to
the members' original absolute paths: there the "target" is ``/`` and links are kept as they were.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import logging
import os
import posixpath
import queue
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

import httpx
import zstandard

from ._cancel import CancelToken
from ._errors import AgentError
from ._events import (
    Emitter,
    EventSink,
    RestoreFailed,
    RestoreFinished,
    RestoreProgress,
    RestoreSkipped,
    RestoreStarted,
)
from ._excludes import glob_to_regex
from ._transport.redact import redact_url
from ._transport.retry import RETRYABLE_EXCEPTIONS, RETRYABLE_STATUSES, RetryPolicy
from .protocol import BackupInfo, RestoreTicket

__all__ = [
    "IntegrityError",
    "MemberInfo",
    "PathFilter",
    "RestoreError",
    "RestoreOptions",
    "RestoreResult",
    "RestoreSource",
    "Restorer",
    "check_member",
    "default_target_name",
    "member_path",
]

log = logging.getLogger("desktop_agent.engine.restore")

CHUNK = 1024 * 1024
STAGING_PREFIX = ".backapp-restore-"


class RestoreError(AgentError):
    """A restore could not be done (the target is left as it was)."""


class IntegrityError(RestoreError):
    """The downloaded object does not match the backup's recorded size or SHA-256, or the archive
    is damaged. Nothing was restored."""


class RestoreSource(Protocol):
    """What a restore needs from the BackApp server (``ApiClient`` implements it)."""

    def list_backups(
        self, *, config_id: str | None = None, limit: int = 100
    ) -> list[BackupInfo]: ...

    def restore_ticket(self, backup_id: str) -> RestoreTicket: ...


# -- pure helpers -------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60]


def default_target_name(config_name: str, filename: str) -> str:
    """The folder a restore goes to when none is given: never an existing one (see ``Restorer``).

    >>> default_target_name("My Daily", "backup-2025-01-07-143022.tar.gz")
    'backapp-restore-My-Daily-2025-01-07-143022'
    """
    stamp = filename.split(".", 1)[0].removeprefix("backup-")
    parts = [p for p in ("backapp-restore", _slug(config_name), _slug(stamp)) if p]
    return "-".join(parts)


def member_path(name: str) -> tuple[str, ...] | None:
    """The path components of a member name, or ``None`` if it is absolute or has ``..``.

    >>> member_path("home/me/./a.txt"), member_path("/etc/passwd"), member_path("a/../../x")
    (('home', 'me', 'a.txt'), None, None)
    """
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


def _link_escapes(parts: tuple[str, ...], target: str) -> bool:
    """Whether a symbolic link at ``parts`` pointing to ``target`` leaves the restore root
    (lexically; ``Restorer`` also checks the links on disk once all are written)."""
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
    return resolved == ".." or resolved.startswith("../")


def check_member(member: tarfile.TarInfo, *, in_place: bool = False) -> str | None:
    """Why ``member`` must not be restored, or ``None`` when it is safe.

    ``in_place`` allows symbolic links to any path (the target is the whole file system then).
    """
    parts = member_path(member.name)
    if parts is None:
        return "absolute path or '..' in the name"
    if not parts:
        return "empty name"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    if member.issym():
        if not in_place and _link_escapes(parts, member.linkname):
            return f"symbolic link pointing outside the target ({member.linkname})"
    elif member.islnk():
        target = member_path(member.linkname)
        if target is None or not target:
            return f"hard link pointing outside the target ({member.linkname})"
    elif not (member.isreg() or member.isdir()):
        return "unsupported member type"
    return None


class PathFilter:
    """Which members ``--path PATTERN`` selects.

    A pattern without ``/`` matches a name at any depth (``*.pdf``, ``Documents``); a pattern with
    ``/`` matches from the archive's root (a leading ``/`` is ignored, so the original absolute path
    works: ``/home/me/Documents``); ``*`` and ``?`` never match ``/``, ``**`` matches across folders.
    A folder that matches selects everything below it.

    >>> f = PathFilter(["/home/me/Documents", "*.pdf"])
    >>> [f.matches(n) for n in ("home/me/Documents/a.txt", "x/y/z.pdf", "home/me/b.txt")]
    [True, True, False]
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [p for p in patterns if p.strip("/")]
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for pattern in self.patterns:
            body = pattern.strip("/")
            anchored = "/" in body
            self._rules.append((anchored, re.compile(glob_to_regex(body))))
        self.used = [False] * len(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def matches(self, name: str) -> bool:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        hit = False
        for i, (anchored, rule) in enumerate(self._rules):
            for depth in range(1, len(parts) + 1):
                candidate = "/".join(parts[:depth]) if anchored else parts[depth - 1]
                if rule.fullmatch(candidate):
                    self.used[i] = True
                    hit = True
                    break
        return hit

    def unused(self) -> list[str]:
        return [p for p, used in zip(self.patterns, self.used, strict=True) if not used]


def archive_opener(filename: str) -> Callable[[IO[bytes]], IO[bytes]]:
    """The decompressor for an archive, chosen by its name (``.tar.gz``, ``.tar.zst``, ``.tar``)."""
    name = filename.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return lambda raw: cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if name.endswith((".tar.zst", ".tzst", ".tar.zstd")):
        return lambda raw: zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True
        )
    if name.endswith(".tar"):
        return lambda raw: raw
    raise RestoreError(f"{filename}: not a .tar.gz, .tar.zst or .tar archive")


# -- the download -------------------------------------------------------------------------------------


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
    ) -> None:
        super().__init__()
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


# -- the restore --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreOptions:
    target: Path | None = None
    """Where to restore; ``None`` with ``in_place`` (the original paths) or ``list_only``."""
    in_place: bool = False
    """Restore to the members' original absolute paths."""
    overwrite: bool = False
    """Replace existing files even when they are newer than the backup's copy."""
    patterns: tuple[str, ...] = ()
    """Restore only the members these ``PathFilter`` patterns select."""
    list_only: bool = False
    """Read (and verify) the archive and report its members; write nothing."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One archive member, as ``--list`` shows it."""

    name: str
    kind: str
    """``file``, ``dir``, ``symlink``, ``hardlink`` or ``other``."""
    size: int
    mode: int
    mtime: float
    linkname: str = ""


@dataclass(slots=True)
class RestoreResult:
    backup_id: str
    filename: str
    target: Path | None
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    archive_size: int = 0
    sha256: str = ""
    duration_ms: int = 0
    resumed: int = 0
    unmatched_patterns: list[str] = field(default_factory=list)
    members: list[MemberInfo] = field(default_factory=list)

    @property
    def restored(self) -> int:
        return self.files + self.dirs + self.links


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "other"


class Restorer:
    """Restores backups through a ``RestoreSource`` (``ApiClient``). ``transport``, ``retry`` and
    ``sleep`` are injectable for tests."""

    def __init__(
        self,
        source: RestoreSource,
        *,
        events: EventSink | None = None,
        temp_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.source = source
        self.temp_dir = temp_dir
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._emit = Emitter(events)
        self._on_member: Callable[[MemberInfo], None] | None = None
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout or httpx.Timeout(60.0, connect=15.0),
            headers={"User-Agent": "backapp-agent", "Accept-Encoding": "identity"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def restore(
        self,
        backup_id: str,
        options: RestoreOptions,
        *,
        cancel: CancelToken | None = None,
        on_member: Callable[[MemberInfo], None] | None = None,
    ) -> RestoreResult:
        """Download, verify and extract one backup. Raises ``RestoreError`` (``IntegrityError`` for
        a damaged object) with the target left as it was; ``BackupCancelled`` on a cancel.

        With ``list_only``, each member goes to ``on_member`` as it is read (memory stays bounded;
        the listing is trustworthy only once ``restore`` returns), or into ``result.members``."""
        started = time.monotonic()
        self._on_member = on_member
        try:
            return self._restore(backup_id, options, cancel or CancelToken(), started)
        except (AgentError, OSError) as exc:
            reason = str(exc) if isinstance(exc, AgentError) else f"{exc}"
            self._emit(
                RestoreFailed(
                    backup_id=backup_id,
                    reason=reason,
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            )
            if isinstance(exc, OSError):
                raise RestoreError(f"restore failed: {exc}") from exc
            raise

    def _restore(
        self, backup_id: str, options: RestoreOptions, cancel: CancelToken, started: float
    ) -> RestoreResult:
        if options.in_place and options.target is not None:
            raise RestoreError("choose either a target folder or an in-place restore, not both")
        if not options.in_place and not options.list_only and options.target is None:
            raise RestoreError("no target folder given")
        ticket = self.source.restore_ticket(backup_id)
        opener = archive_opener(ticket.filename)
        result = RestoreResult(backup_id=backup_id, filename=ticket.filename, target=None)
        filt = PathFilter(options.patterns)
        target_label = (
            "" if options.list_only else ("/" if options.in_place else str(options.target))
        )
        self._emit(
            RestoreStarted(
                backup_id=backup_id, filename=ticket.filename, size=ticket.size, target=target_label
            )
        )
        stage: _Stage | None = None
        if not options.list_only:
            stage = _Stage.create(options, self.temp_dir)
            result.target = stage.final
        download = ResumableDownload(
            self._http,
            ticket.url,
            ticket.size,
            fresh_url=lambda: self.source.restore_ticket(backup_id).url,
            retry=self.retry,
            sleep=self._sleep,
            cancel=cancel,
        )

        def progress(force: bool = False) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = download.position / elapsed
            left = ticket.size - download.position
            self._emit.throttled(
                "restore",
                lambda: RestoreProgress(
                    backup_id=backup_id,
                    bytes_downloaded=download.position,
                    size=ticket.size,
                    files=result.restored,
                    bytes_written=result.bytes,
                    rate=rate,
                    eta=left / rate if rate > 0 else None,
                ),
                force=force,
            )

        try:
            download.start()
            buffered = io.BufferedReader(download, CHUNK)
            try:
                stream = opener(buffered)
                with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
                    for member in tar:
                        cancel.raise_if_cancelled()
                        self._member(tar, member, options, filt, stage, result)
                        progress()
                download.drain()
            except (
                tarfile.TarError,
                EOFError,
                zlib.error,
                zstandard.ZstdError,
                gzip.BadGzipFile,
            ) as exc:
                self._check_integrity(download, ticket)  # a hash mismatch explains it best
                raise IntegrityError(
                    f"the archive is damaged ({exc}); nothing was restored"
                ) from exc
            self._check_integrity(download, ticket)
            if stage is not None and filt and result.restored == 0:
                stage.discard()  # nothing matched: leave no empty folder behind
            elif stage is not None:
                stage.finish_extraction(result, self._skip_event(result))
                stage.commit(options.overwrite, self._skip_event(result))
        except BaseException:
            if stage is not None:
                stage.discard()
            raise
        finally:
            download.close()
        result.unmatched_patterns = filt.unused()
        result.archive_size = download.position
        result.sha256 = download.sha256.hexdigest()
        result.resumed = download.resumed
        result.duration_ms = int((time.monotonic() - started) * 1000)
        progress(force=True)
        self._emit(
            RestoreFinished(
                backup_id=backup_id,
                filename=ticket.filename,
                target=target_label,
                files=result.restored,
                bytes=result.bytes,
                skipped=len(result.skipped),
                archive_size=result.archive_size,
                sha256=result.sha256,
                duration_ms=result.duration_ms,
                resumed=result.resumed,
            )
        )
        return result

    @staticmethod
    def _check_integrity(download: ResumableDownload, ticket: RestoreTicket) -> None:
        if download.position == download.size:
            digest = download.sha256.hexdigest()
            if not ticket.sha256:
                log.warning(
                    "the server recorded no SHA-256 for this backup: only its size is checked"
                )
            elif digest != ticket.sha256.lower():
                raise IntegrityError(
                    f"SHA-256 mismatch: the downloaded object hashes to {digest}, the backup "
                    f"recorded {ticket.sha256}; nothing was restored"
                )
        elif download.position < download.size and download.at_eof:
            raise IntegrityError(
                f"size mismatch: got {download.position} bytes, the backup recorded {download.size}"
            )

    def _skip_event(self, result: RestoreResult) -> Callable[[str, str], None]:
        def skip(path: str, reason: str) -> None:
            result.skipped.append((path, reason))
            self._emit(RestoreSkipped(backup_id=result.backup_id, path=path, reason=reason))

        return skip

    def _member(
        self,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
        options: RestoreOptions,
        filt: PathFilter,
        stage: _Stage | None,
        result: RestoreResult,
    ) -> None:
        if filt and not filt.matches(member.name):
            return
        reason = check_member(member, in_place=options.in_place)
        if reason is not None:
            parts = member_path(member.name)
            if stage is not None and parts:
                stage.refused.add(parts)  # and never write below it
            if reason != "empty name":
                self._skip_event(result)(member.name, reason)
            return
        if stage is None:
            (self._on_member or result.members.append)(
                MemberInfo(
                    name=member.name,
                    kind=_kind(member),
                    size=member.size,
                    mode=member.mode,
                    mtime=member.mtime,
                    linkname=member.linkname,
                )
            )
            if member.isdir():
                result.dirs += 1
            elif member.isreg():
                result.files += 1
                result.bytes += member.size
            else:
                result.links += 1
            return
        parts = member_path(member.name)
        assert parts
        refused = next(
            (parts[:i] for i in range(1, len(parts)) if parts[:i] in stage.refused), None
        )
        if refused is not None:
            stage.refused.add(parts)
            self._skip_event(result)(member.name, f"its folder {'/'.join(refused)!r} was refused")
            return
        problem = stage.write(tar, member, parts, options.in_place)
        if problem is not None:
            stage.refused.add(parts)
            self._skip_event(result)(member.name, problem)
        elif member.isdir():
            result.dirs += 1
        elif member.isreg():
            result.files += 1
            result.bytes += member.size
        else:
            result.links += 1


class _Stage:
    """The hidden folder a restore is extracted into, and the move into place."""

    def __init__(self, root: Path, final: Path, *, rename_whole: bool) -> None:
        self.root = root
        self.final = final
        self.rename_whole = rename_whole
        self._dirs: list[tuple[Path, int, float]] = []
        self._files: set[tuple[str, ...]] = set()
        self.refused: set[tuple[str, ...]] = set()
        self._real_dirs: set[tuple[str, ...]] = {()}
        """Members refused as unsafe: nothing is written below them either."""
        self._preserve_owner = hasattr(os, "geteuid") and os.geteuid() == 0

    @classmethod
    def create(cls, options: RestoreOptions, temp_dir: Path | None) -> _Stage:
        token = secrets.token_hex(4)
        if options.in_place:
            # The original paths may be anywhere: stage in the scratch folder; the move into place
            # falls back to a copy when that is another file system.
            base = temp_dir or Path(tempfile.gettempdir()) / "backapp-agent"
            base.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base))
            return cls(root, Path("/"), rename_whole=False)
        target = Path(os.path.abspath(options.target or "."))
        if os.path.lexists(target):
            if not target.is_dir() or target.is_symlink():
                raise RestoreError(f"{target} exists and is not a folder")
            root = target / f"{STAGING_PREFIX}{token}"
            root.mkdir(mode=0o700)
            return cls(root, target, rename_whole=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        root = target.parent / f"{STAGING_PREFIX}{target.name[:100]}-{token}"
        root.mkdir(mode=0o700)
        return cls(root, target, rename_whole=True)

    # -- extraction ---------------------------------------------------------------------------------

    def _parent(self, parts: tuple[str, ...]) -> Path | str:
        """The staged parent folder of ``parts``, created as needed; a reason if it goes through a
        link or a file."""
        parent = parts[:-1]
        if parent in self._real_dirs:  # checked before; a folder is never replaced later
            return self.root.joinpath(*parent)
        path = self.root
        for depth, name in enumerate(parent, 1):
            path = path / name
            if parent[:depth] in self._real_dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700)
                self._dirs.append((path, 0o755, -1.0))  # implicit: a sane mode, today's mtime
                continue
            if stat.S_ISLNK(st.st_mode):
                return (
                    "its folder is a symbolic link in the archive (refused: it could lead outside)"
                )
            if not stat.S_ISDIR(st.st_mode):
                return "its folder is a file in the archive"
        for depth in range(1, len(parent) + 1):
            self._real_dirs.add(parent[:depth])
        return path

    def write(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...], in_place: bool
    ) -> str | None:
        parent = self._parent(parts)
        if isinstance(parent, str):
            return parent
        path = parent / parts[-1]
        mask = 0o7777 if in_place else 0o777
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                if not member.isdir():
                    return "a folder of the same name is already in the archive"
            else:
                os.unlink(path)  # a later member of the same name wins, as with tar
                self._files.discard(parts)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            self._dirs.append((path, member.mode & mask, member.mtime))
        elif member.isreg():
            source = tar.extractfile(member)
            assert source is not None
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
            with open(fd, "wb", closefd=True) as out:
                while block := source.read(CHUNK):
                    out.write(block)
                out.flush()
                os.chmod(fd, member.mode & mask)
                self._owner(fd, member)
                os.utime(fd, (member.mtime, member.mtime))
            self._files.add(parts)
        elif member.issym():
            os.symlink(member.linkname, path)
            self._owner(path, member)
            if os.utime in os.supports_follow_symlinks:
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        elif member.islnk():
            target = member_path(member.linkname)
            if not target or target not in self._files:
                return f"hard link to a file that was not restored ({member.linkname})"
            os.link(self.root.joinpath(*target), path, follow_symlinks=False)
            self._files.add(parts)
        return None

    def _owner(self, path: Path | int, member: tarfile.TarInfo) -> None:
        if self._preserve_owner:  # as tar does for root
            try:
                if isinstance(path, int):
                    os.fchown(path, member.uid, member.gid)
                else:
                    os.lchown(path, member.uid, member.gid)
            except OSError:
                pass

    def finish_extraction(self, result: RestoreResult, skip: Callable[[str, str], None]) -> None:
        """Folder modes and times (deepest first, after their contents), and the on-disk check
        that no symbolic link leads outside (chains of links that each looked harmless)."""
        if self.final != Path("/"):
            root = os.path.realpath(self.root)
            for link in list(_walk_links(self.root)):
                resolved = os.path.realpath(link)
                if resolved != root and not resolved.startswith(root + os.sep):
                    rel = os.path.relpath(link, self.root)
                    target = os.readlink(link)
                    os.unlink(link)
                    result.links -= 1
                    skip(rel, f"symbolic link leads outside the target ({target})")
        for path, mode, mtime in sorted(self._dirs, key=lambda d: -len(d[0].parts)):
            os.chmod(path, mode)
            if mtime >= 0:
                os.utime(path, (mtime, mtime))

    # -- the move into place ------------------------------------------------------------------------

    def commit(self, overwrite: bool, skip: Callable[[str, str], None]) -> None:
        if self.rename_whole:
            try:
                os.rename(self.root, self.final)
            except OSError as exc:
                raise RestoreError(f"could not move the restore into {self.final}: {exc}") from exc
            return
        self._merge(self.root, self.final, "", overwrite, skip)
        self.discard()

    def _merge(
        self, src: Path, dst: Path, rel: str, overwrite: bool, skip: Callable[[str, str], None]
    ) -> None:
        in_place = self.final == Path("/")
        for name in sorted(os.listdir(src)):
            s, d, r = src / name, dst / name, f"{rel}{name}"
            sst = os.lstat(s)
            try:
                dst_st: os.stat_result | None = os.lstat(d)
            except FileNotFoundError:
                dst_st = None
            if dst_st is None:
                _move(s, d)
                continue
            if stat.S_ISDIR(sst.st_mode):
                if stat.S_ISDIR(dst_st.st_mode) or (
                    in_place and stat.S_ISLNK(dst_st.st_mode) and d.is_dir()
                ):
                    self._merge(s, d, r + "/", overwrite, skip)
                else:
                    skip(r, "something that is not a folder is in the way (kept)")
                continue
            if stat.S_ISDIR(dst_st.st_mode):
                skip(r, "a folder is in the way (kept)")
            elif not overwrite and dst_st.st_mtime > sst.st_mtime:
                skip(r, "the existing file is newer (kept; --overwrite replaces it)")
            else:
                tmp = d.parent / f".{name[:100]}.backapp-{secrets.token_hex(4)}"
                _move(s, tmp)
                os.replace(tmp, d)

    def discard(self) -> None:
        if os.path.lexists(self.root):
            _make_writable(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def _walk_links(root: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                yield path


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                try:
                    os.chmod(path, 0o700)
                except OSError:
                    pass


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(os.fspath(src), os.fspath(dst))
