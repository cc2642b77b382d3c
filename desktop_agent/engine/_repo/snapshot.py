"""One incremental backup, start to end: start it on the server, open the repository, find the
parent, scan, write, index, describe, commit — or abort, so that a half-done snapshot is never
listed as restorable.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._cancel import CancelToken
from .._errors import BackupCancelled
from .._events import (
    ArchiveProgress,
    Emitter,
    FileFailed,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    rate_eta,
)
from .._scanner import ScanTotals, scan
from ..protocol import FileError
from ..repo_protocol import (
    CompleteSnapshot,
    MissingObjects,
    RepoPlane,
    SnapshotStarted,
    StartSnapshot,
)
from .backup import SnapshotWriter
from .errors import RepositoryError
from .format import (
    MAGIC_INDEX,
    MAGIC_SNAPSHOT,
    VERSION,
    IndexDoc,
    IndexPack,
    SnapshotDoc,
    Summary,
    encode_object,
)
from .memory import tune_allocator
from .repository import Repository, sha256_hex, utc_now_text
from .write_options import SnapshotOptions, WriteStats

log = logging.getLogger("desktop_agent.engine.repo")

# Index objects stay well below the storage limit and a reader's memory: a new one every so many
# blob entries.
_INDEX_BLOBS = 100_000
# A commit that finds lost packs forgets them and writes the snapshot again, this many times.
_COMMIT_TRIES = 2


@dataclass(frozen=True, slots=True)
class SnapshotJob:
    config_id: str
    config_name: str
    sources: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    default_excludes: bool = True
    exclude_node_modules: bool = False
    skip_paths: tuple[str | Path, ...] = ()
    temp_dir: Path | None = None
    lease_token: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SnapshotOutcome:
    backup_id: str
    status: str
    parent_id: str | None
    started_at: str
    files: int
    dirs: int
    bytes: int
    bytes_read: int
    new_bytes: int
    new_blobs: int
    packs: int
    duration_ms: int
    errors: tuple[FileError, ...]


def take_snapshot(
    plane: RepoPlane,
    open_repo: Callable[[SnapshotStarted], Repository],
    job: SnapshotJob,
    *,
    emit: Emitter | None = None,
    cancel: CancelToken | None = None,
    options: SnapshotOptions | None = None,
    on_started: Callable[[SnapshotStarted], None] | None = None,
) -> SnapshotOutcome:
    """Back up ``job`` as a snapshot. ``open_repo`` gives the agent's repository once the server
    has opened the backup (and said whose repository it is); ``on_started`` is told then too.
    Raises ``BackupCancelled`` (after aborting the backup on the server) or the error that stopped
    it (aborted too, with that reason)."""
    emit = emit or Emitter(None)
    t0 = time.monotonic()
    started_at = utc_now_text()
    # What the server says is live is true as of this moment; packs that other runs of this
    # machine upload meanwhile are judged by their own runs (``Repository.sync``).
    asked_at = time.time()
    started = plane.snapshot_start(
        StartSnapshot(job.config_id, lease_token=job.lease_token, tags=dict(job.tags))
    )
    if on_started is not None:
        on_started(started)
    try:
        repo = open_repo(started)
        try:
            return _run(repo, job, started, emit, cancel, options, t0, started_at, asked_at)
        finally:
            repo.close()
    except BackupCancelled as exc:
        _abort(
            plane,
            started.backup_id,
            exc.reason or "cancelled by the user",
            cancelled=exc.deliberate,
        )
        raise
    except BaseException as exc:
        _abort(plane, started.backup_id, _reason(exc))
        raise


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:4000]


def _abort(plane: RepoPlane, backup_id: str, reason: str, *, cancelled: bool = False) -> None:
    try:
        plane.snapshot_abort(backup_id, reason, cancelled=cancelled)
    except Exception as exc:  # the server will see the lease lapse instead
        log.warning("could not tell the server that snapshot %s stopped: %s", backup_id, exc)


def _run(
    repo: Repository,
    job: SnapshotJob,
    started: SnapshotStarted,
    emit: Emitter,
    cancel: CancelToken | None,
    options: SnapshotOptions | None,
    t0: float,
    started_at: str,
    asked_at: float | None = None,
) -> SnapshotOutcome:
    backup_id = started.backup_id
    repo.open(started, backup_id)
    repo.sync(started.live_packs, started.pack_count, asked_at=asked_at)
    parent_root: bytes | None = None
    if started.parent_id is not None:
        try:
            parent_root = repo.snapshot(started.parent_id).tree
        except RepositoryError as exc:
            log.warning("cannot read the parent snapshot (%s); every file will be read", exc)

    emit(ScanStarted(config_id=job.config_id, sources=job.sources))

    def scan_progress(t: ScanTotals) -> None:
        emit.throttled(
            f"scan:{job.config_id}",
            lambda: ScanProgress(
                config_id=job.config_id, files=t.files, dirs=t.dirs, bytes=t.bytes
            ),
        )

    # Roots in path order, so that the folders above them are entered once each.
    sources = tuple(sorted(job.sources, key=lambda s: s.encode("utf-8", "surrogateescape")))
    with scan(
        sources,
        excludes=job.excludes,
        default_excludes=job.default_excludes,
        exclude_node_modules=job.exclude_node_modules,
        skip_paths=job.skip_paths,
        temp_dir=job.temp_dir,
        cancel=cancel,
        progress=scan_progress,
    ) as found:
        totals = found.totals
        emit(
            ScanFinished(
                config_id=job.config_id,
                files=totals.files,
                dirs=totals.dirs,
                bytes=totals.bytes,
                errors=len(found.errors),
            )
        )
        for err in found.errors:
            emit(FileFailed(config_id=job.config_id, path=err.path, message=err.message))

        def progress(s: WriteStats) -> None:
            left = max(totals.bytes - s.bytes, 0)
            rate, eta = rate_eta(s.bytes_read, left, time.monotonic() - t0)
            emit(
                ArchiveProgress(
                    config_id=job.config_id,
                    files_done=s.files,
                    files_total=totals.files,
                    bytes_done=s.bytes,
                    bytes_total=totals.bytes,
                    archive_bytes=s.new_bytes,
                    rate=rate,
                    eta=eta,
                )
            )

        def on_error(err: FileError) -> None:
            emit(FileFailed(config_id=job.config_id, path=err.path, message=err.message))

        tune_allocator()  # before the writer's threads allocate their first buffers
        for attempt in range(1, _COMMIT_TRIES + 1):
            writer = SnapshotWriter(
                repo,
                backup_id,
                options=options,
                cancel=cancel,
                progress=progress,
                on_error=on_error,
            )
            root = writer.write(found.stat_entries(), parent_root)
            writer.finish()
            stats = writer.stats
            errors = tuple(found.errors) + tuple(stats.errors)
            indexes = writer.indexes + _write_indexes(
                repo,
                backup_id,
                writer.referenced,
                already={name for _, packs in writer.indexes for name in packs},
            )
            doc = SnapshotDoc(
                v=VERSION,
                backupId=backup_id,
                configId=job.config_id,
                configName=job.config_name,
                time=started_at,
                hostname=socket.gethostname(),
                sources=list(job.sources),
                tree=root,
                parent=started.parent_id,
                summary=Summary(
                    files=stats.files,
                    dirs=stats.dirs,
                    symlinks=stats.symlinks,
                    bytes=stats.bytes,
                    newBytes=stats.new_bytes,
                    newBlobs=stats.new_blobs,
                    packs=len(writer.referenced),
                    errors=len(errors),
                ),
            )
            data = encode_object(repo.keys, MAGIC_SNAPSHOT, doc)
            repo.upload(backup_id, [("snapshot", backup_id, data)])
            duration_ms = int((time.monotonic() - t0) * 1000)
            try:
                repo.plane.snapshot_complete(
                    CompleteSnapshot(
                        backup_id=backup_id,
                        files=stats.files,
                        size=stats.bytes,
                        new_bytes=stats.new_bytes,
                        duration_ms=duration_ms,
                        packs=frozenset(writer.referenced),
                        indexes=tuple(name for name, _ in indexes),
                        errors=tuple(e.to_json() for e in errors),
                    )
                )
            except MissingObjects as exc:
                lost = {name for kind, name in exc.missing if kind == "data"}
                if attempt == _COMMIT_TRIES or not lost:
                    raise RepositoryError(str(exc)) from exc
                log.warning(
                    "%d packs are missing from storage; writing the snapshot again", len(lost)
                )
                # Only these: another run of this machine may be adding packs to the cache now.
                repo.cache.forget_packs(lost)
                continue
            for _, packs in indexes:
                repo.cache.mark_indexed(packs)
            repo.cache.add_index_names(name for name, _ in indexes)
            repo.remember(doc)
            return SnapshotOutcome(
                backup_id=backup_id,
                status="completed",
                parent_id=started.parent_id,
                started_at=started_at,
                files=stats.files,
                dirs=stats.dirs,
                bytes=stats.bytes,
                bytes_read=stats.bytes_read,
                new_bytes=stats.new_bytes,
                new_blobs=stats.new_blobs,
                packs=stats.packs,
                duration_ms=duration_ms,
                errors=errors,
            )
    raise AssertionError("unreachable")


def _write_indexes(
    repo: Repository, backup_id: str, referenced: set[int], already: set[str]
) -> list[tuple[str, list[str]]]:
    """Upload index objects for the packs the snapshot needs that no index lists yet (nor one of
    this run's, ``already``: packs the writer uploaded); returns each index's name with the packs
    it lists."""
    names = [n for n in repo.cache.unindexed_packs(referenced) if n not in already]
    out: list[tuple[str, list[str]]] = []
    packs: list[IndexPack] = []
    listed: list[str] = []
    count = 0

    def flush() -> None:
        nonlocal packs, listed, count
        if not packs:
            return
        data = encode_object(repo.keys, MAGIC_INDEX, IndexDoc(v=VERSION, packs=packs))
        name = sha256_hex(data)
        repo.upload(backup_id, [("index", name, data)])
        out.append((name, listed))
        packs, listed, count = [], [], 0

    for name in names:
        entries = repo.cache.pack_entries(name)
        packs.append(IndexPack(id=bytes.fromhex(name), blobs=[tuple(e) for e in entries]))  # type: ignore[misc]
        listed.append(name)
        count += len(entries)
        if count >= _INDEX_BLOBS:
            flush()
    flush()
    return out
