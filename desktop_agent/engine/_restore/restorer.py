"""``Restorer``: one restore from start to end, and the events that report it.

    restore: POST /api/agent/restore -> read the backup (``archive``) -> each member checked
             (``planning``) and written into a hidden staging folder (``extraction``) -> the whole
             object verified (``verification``) -> the staging folder moved into place

Only when the whole object has been read and its size and SHA-256 match what the server recorded is
the staging folder moved into place; on any error (a hash mismatch, a damaged archive, a network
failure past the retries, a cancel) the staging folder is removed and the target is left as it was.
A half-written restore can therefore never look like a good one.

How a backup is read depends on how it is stored; ``Restorer._reader`` makes that choice. Everything
around the reader (the checks on each member, the staging folder, the events, the result) is the
same for every kind of backup.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from .._cancel import CancelToken
from .._closing import Closing
from .._errors import AgentError, RestoreError, os_error_text
from .._events import (
    Emitter,
    EventSink,
    RestoreFailed,
    RestoreFinished,
    RestoreProgress,
    RestoreSkipped,
    RestoreStarted,
    rate_eta,
)
from .._transport.retry import RetryPolicy
from .._transport.throttle import Throttle
from .._transport.tls import tls_context
from ..protocol import RestoreTicket
from .archive import ArchiveReader
from .download import RestoreSource
from .extraction import Stage
from .planning import MemberInfo, PathFilter, RestoreOptions, check_member, member_info, member_path

__all__ = ["BackupReader", "RestoreResult", "Restorer"]

Content = Callable[[], IO[bytes] | None]
"""Opens the bytes of the regular file being visited."""


class BackupReader(Protocol):
    """One stored backup, read for a restore: ``ArchiveReader`` reads a tar archive."""

    @property
    def position(self) -> int:
        """Bytes downloaded so far."""
        ...

    @property
    def resumed(self) -> int:
        """How often the download was resumed after an interruption."""
        ...

    @property
    def sha256(self) -> str:
        """The SHA-256 (hex) of what was downloaded."""
        ...

    def read(self, visit: Callable[[tarfile.TarInfo, Content], None]) -> None:
        """Hand each member to ``visit``, in order, then verify what was read; raises
        ``IntegrityError`` if it is not the backup the server recorded."""
        ...

    def close(self) -> None:
        """Release the connections (also after an error)."""
        ...


@dataclass(slots=True)
class RestoreResult:
    """What one restore (or listing) did: the members written, those skipped and why, and the
    object it verified."""

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
    renamed: list[tuple[str, str]] = field(default_factory=list)
    """(path, the name the restored copy got beside an existing, different file)."""
    replaced: list[str] = field(default_factory=list)
    """Existing files replaced (``overwrite``)."""
    unchanged: int = 0
    """Files already there with the backup's content, left as they were."""
    packs: int = 0
    """Snapshot packs read from (a snapshot restore; 0 for an archive)."""

    @property
    def restored(self) -> int:
        return self.files + self.dirs + self.links

    def finished(self, target_label: str) -> RestoreFinished:
        """The event that reports this restore done (``target_label``: where, in words)."""
        return RestoreFinished(
            backup_id=self.backup_id,
            filename=self.filename,
            target=target_label,
            files=self.restored,
            bytes=self.bytes,
            skipped=len(self.skipped),
            archive_size=self.archive_size,
            sha256=self.sha256,
            duration_ms=self.duration_ms,
            resumed=self.resumed,
            unchanged=self.unchanged,
            renamed=tuple(self.renamed),
            replaced=tuple(self.replaced),
        )

    def count(self, member: tarfile.TarInfo) -> None:
        """Count ``member`` as restored (or listed)."""
        if member.isdir():
            self.dirs += 1
        elif member.isreg():
            self.files += 1
            self.bytes += member.size
        else:
            self.links += 1


class Restorer(Closing):
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
        download_limit: Throttle | None = None,
        identities: Callable[[RestoreTicket], Sequence[Any]] | None = None,
    ) -> None:
        """``download_limit``: the agent's ``limitDownload`` (``Throttle.from_mbps``);
        ``identities``: the ``age`` identities that open an encrypted archive (asked for only
        when the backup is one; ``archive_identities``)."""
        self.source = source
        self.identities = identities
        self.download_limit = download_limit
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
            verify=tls_context(),
        )

    def close(self) -> None:
        self._http.close()

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
            reason = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
            self._emit(
                RestoreFailed(
                    backup_id=backup_id,
                    reason=reason,
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            )
            if isinstance(exc, OSError):
                raise RestoreError(f"restore failed: {reason}") from exc
            raise

    def _reader(self, backup_id: str, ticket: RestoreTicket, cancel: CancelToken) -> BackupReader:
        """How this backup is read. Every backup is one tar archive today; a snapshot (packs in a
        content-addressed repository, of which only those holding the wanted files are downloaded)
        will get its own reader, chosen here by what the ticket names."""
        return ArchiveReader(
            self._http,
            ticket,
            fresh_url=lambda: self.source.restore_ticket(backup_id).url,
            retry=self.retry,
            sleep=self._sleep,
            cancel=cancel,
            limit=self.download_limit,
            identities=self.identities,
        )

    def _restore(
        self, backup_id: str, options: RestoreOptions, cancel: CancelToken, started: float
    ) -> RestoreResult:
        options.check()
        ticket = self.source.restore_ticket(backup_id)
        reader = self._reader(backup_id, ticket, cancel)
        result = RestoreResult(backup_id=backup_id, filename=ticket.filename, target=None)
        filt = PathFilter(options.patterns)
        target_label = options.target_label
        self._emit(
            RestoreStarted(
                backup_id=backup_id, filename=ticket.filename, size=ticket.size, target=target_label
            )
        )
        skip = self._skip_event(result)

        def progress(force: bool = False) -> None:
            left = ticket.size - reader.position
            rate, eta = rate_eta(reader.position, left, time.monotonic() - started)
            self._emit.throttled(
                "restore",
                lambda: RestoreProgress(
                    backup_id=backup_id,
                    bytes_downloaded=reader.position,
                    size=ticket.size,
                    files=result.restored,
                    bytes_written=result.bytes,
                    rate=rate,
                    eta=eta,
                ),
                force=force,
            )

        stage: Stage | None = None

        def visit(member: tarfile.TarInfo, content: Content) -> None:
            cancel.raise_if_cancelled()
            self._member(member, content, options, filt, stage, result)
            progress()

        try:
            if not options.list_only:
                stage = Stage.create(options, self.temp_dir)
                result.target = stage.final
            reader.read(visit)
            if stage is not None and filt and result.restored == 0:
                stage.discard()  # nothing matched: leave no empty folder behind
            elif stage is not None:
                result.links -= stage.finish_extraction(skip)
                stage.commit(options.overwrite, skip)
                result.renamed, result.replaced = stage.renamed, stage.replaced
                result.unchanged = stage.unchanged
        except BaseException:
            if stage is not None:
                stage.discard()
            raise
        finally:
            reader.close()
        result.unmatched_patterns = filt.unused()
        result.archive_size = reader.position
        result.sha256 = reader.sha256
        result.resumed = reader.resumed
        result.duration_ms = int((time.monotonic() - started) * 1000)
        progress(force=True)
        self._emit(result.finished(target_label))
        return result

    def _skip_event(self, result: RestoreResult) -> Callable[[str, str], None]:
        def skip(path: str, reason: str) -> None:
            result.skipped.append((path, reason))
            self._emit(RestoreSkipped(backup_id=result.backup_id, path=path, reason=reason))

        return skip

    def _member(
        self,
        member: tarfile.TarInfo,
        content: Content,
        options: RestoreOptions,
        filt: PathFilter,
        stage: Stage | None,
        result: RestoreResult,
    ) -> None:
        """One member: selected by the filter, checked, then listed or written, and counted."""
        if filt and not filt.matches(member.name):
            return
        reason = check_member(member, in_place=options.in_place)
        if reason is not None:
            parts = member_path(member.name)
            if stage is not None and parts:
                stage.refuse(parts)  # and never write below it
            if reason != "empty name":
                self._skip_event(result)(member.name, reason)
            return
        if stage is None:
            (self._on_member or result.members.append)(member_info(member))
        else:
            problem = stage.write(member, content, in_place=options.in_place)
            if problem is not None:
                self._skip_event(result)(member.name, problem)
                return
        result.count(member)
