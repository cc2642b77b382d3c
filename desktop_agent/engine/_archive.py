"""The tar archive: its name and format, the pipeline that writes it, and the backup that streams
one to storage.

    backup: check sources -> scan -> [archive -> compress -> upload] streamed

``ArchiveBackup`` is the one kind of backup the engine makes today (``BackupEngine`` picks it and
records the result on the server); ``write_archive`` is the same pipeline without the upload.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from .. import __version__
from ._age import AGE_SUFFIX, AgeEncryptor
from ._cancel import CancelToken
from ._compress import (
    ArchiveFormat,
    OrderedPipe,
    archive_extension,
    make_compressor,
    pipe_capacity,
)
from ._errors import ConfigurationError, SourceError
from ._events import (
    ArchiveProgress,
    Emitter,
    FileFailed,
    FileStarted,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    UploadProgress,
    UploadResumed,
    UploadStarted,
    UploadWaiting,
    rate_eta,
)
from ._job import MAX_REPORTED_ERRORS, BackupJob
from ._options import EngineOptions
from ._recovery.account import RecoveryPlane, archive_recipients
from ._scanner import ScanResult, ScanTotals, check_sources, scan, source_problems_text
from ._tar import Archiver, ArchiveStats
from ._upload import Uploader, UploadResult, Waiting
from .protocol import BackupOptions, ConfigInfo, ControlPlane, FileError, Storage

__all__ = [
    "ArchiveBackup",
    "ArchivePipeline",
    "archive_filename",
    "archive_format",
    "write_archive",
]

log = logging.getLogger("desktop_agent.engine")

SendLog = Callable[[str, str, dict[str, object]], None]


def archive_filename(when: datetime, fmt: ArchiveFormat) -> str:
    """The spec's archive name, in UTC: ``backup-2025-01-07-143022.tar.gz``."""
    return f"backup-{when.astimezone(UTC):%Y-%m-%d-%H%M%S}{archive_extension(fmt)}"


def archive_format(options: BackupOptions) -> ArchiveFormat:
    """``compression: false`` -> plain tar; else ``compressionFormat`` (gzip by default, or zstd)."""
    if not options.compression:
        return "none"
    fmt = (options.compression_format or "gzip").strip().lower()
    if fmt in ("gzip", "gz", "tar.gz", "tgz"):
        return "gzip"
    if fmt in ("zstd", "zst", "tar.zst"):
        return "zstd"
    raise ConfigurationError(
        f"unsupported compressionFormat {fmt!r}: this agent writes gzip or zstd"
    )


class ArchivePipeline:
    """tar -> compress -> ``sink``, in order: the ``Archiver`` writes into a compressor (one thread
    per core by default) whose output an ``OrderedPipe`` hands to ``sink`` on a helper thread."""

    def __init__(
        self,
        sink: Callable[[bytes], None],
        fmt: ArchiveFormat,
        *,
        gzip_level: int = 6,
        zstd_level: int = 1,
        threads: int | None = None,
        cancel: CancelToken | None = None,
        max_errors: int = MAX_REPORTED_ERRORS,
        on_file: Callable[[str, int], None] | None = None,
        on_progress: Callable[[ArchiveStats], None] | None = None,
        on_error: Callable[[FileError], None] | None = None,
    ) -> None:
        threads = threads or os.cpu_count() or 1
        self._pipe = OrderedPipe(sink, capacity=pipe_capacity(fmt, threads))
        self._compressor = make_compressor(
            fmt, self._pipe, gzip_level=gzip_level, zstd_level=zstd_level, threads=threads
        )
        self.archiver = Archiver(
            self._compressor.write,
            write_content=self._compressor.write_content,
            chunk_size=self._compressor.read_size,
            cancel=cancel,
            on_file=on_file,
            on_progress=on_progress,
            on_error=on_error,
            max_errors=max_errors,
        )

    def write(self, scanned: ScanResult) -> ArchiveStats:
        """Archive every entry of ``scanned`` and close the stages; on any error (or a cancel), abort
        them so that no helper thread is left waiting."""
        try:
            for kind, path, size, mtime_ns in scanned.raw_entries():
                self.archiver.add_path(kind, path, size, mtime_ns)
            self.archiver.finish()
            self._compressor.close()
            self._pipe.close()
        except BaseException:
            self._compressor.abort()
            self._pipe.abort()
            raise
        return self.archiver.stats


def write_archive(
    sink: Callable[[bytes], None],
    sources: Sequence[str],
    *,
    fmt: ArchiveFormat = "gzip",
    excludes: Sequence[str] = (),
    default_excludes: bool = True,
    exclude_node_modules: bool = False,
    gzip_level: int = 6,
    zstd_level: int = 1,
    threads: int | None = None,
    temp_dir: Path | None = None,
    cancel: CancelToken | None = None,
) -> ArchiveStats:
    """Scan ``sources`` and stream their archive into ``sink`` (on a helper thread, in order): the
    engine's pipeline without the upload. The returned stats include the scan's per-file errors."""
    with scan(
        sources,
        excludes=excludes,
        default_excludes=default_excludes,
        exclude_node_modules=exclude_node_modules,
        temp_dir=temp_dir,
        cancel=cancel,
    ) as scanned:
        pipeline = ArchivePipeline(
            sink,
            fmt,
            gzip_level=gzip_level,
            zstd_level=zstd_level,
            threads=threads,
            cancel=cancel,
            max_errors=MAX_REPORTED_ERRORS,
        )
        for problem in scanned.errors:
            pipeline.archiver.error(problem.path, problem.message)
        stats = pipeline.write(scanned)
    return stats


@dataclass(frozen=True, slots=True)
class ArchiveBackup:
    """One config backed up as one tar archive streamed to storage. ``run`` leaves the upload to be
    recorded as completed by the caller, and keeps its progress on the ``BackupJob`` for the
    failure path."""

    plane: ControlPlane
    storage: Storage
    options: EngineOptions
    _: KW_ONLY
    emit: Emitter
    clock: Callable[[], float]
    send_log: SendLog

    def run(self, job: BackupJob, cancel: CancelToken) -> UploadResult:
        """Check the sources, scan them, archive, compress and upload; raises on failure."""
        config = job.config
        if not job.sources:
            raise SourceError("the config has no source paths")
        fmt = archive_format(config.options)
        problems = check_sources(job.sources)
        if problems:
            # The reason alone: these are not per-file errors of a backup that went on (none
            # started), and the history shows per-file errors as such.
            raise SourceError(source_problems_text(problems))
        self._warn_about_options(config)
        recipients = self._recipients() if config.options.encryption else None

        self.emit(ScanStarted(config_id=config.id, sources=job.sources))

        def scan_progress(t: ScanTotals) -> None:
            self.emit.throttled(
                "scan",
                lambda: ScanProgress(
                    config_id=config.id, files=t.files, dirs=t.dirs, bytes=t.bytes
                ),
            )

        temp_dir = self.options.temp_dir
        with scan(
            job.sources,
            excludes=config.excludes,
            default_excludes=self.options.default_excludes,
            exclude_node_modules=self.options.exclude_node_modules
            or config.options.exclude_node_modules,
            skip_paths=[temp_dir] if temp_dir is not None else (),
            temp_dir=temp_dir,
            cancel=cancel,
            progress=scan_progress,
        ) as scanned:
            totals = scanned.totals
            for problem in scanned.errors:
                self.emit(
                    FileFailed(config_id=config.id, path=problem.path, message=problem.message)
                )
            job.add_errors(scanned.errors)
            self.emit(
                ScanFinished(
                    config_id=config.id,
                    files=totals.files + totals.symlinks,
                    dirs=totals.dirs,
                    bytes=totals.bytes,
                    errors=len(scanned.errors),
                )
            )
            job.estimated = totals.estimated_archive_size
            job.uploader = Uploader(
                self.plane,
                self.storage,
                config_id=config.id,
                filename=archive_filename(job.started, fmt) + (AGE_SUFFIX if recipients else ""),
                estimated_size=job.estimated,
                options=self.options.upload,
                cancel=cancel,
            )
            upload = self._archive(job, scanned, fmt, cancel, recipients)
        return upload

    def _recipients(self) -> list[str]:
        """Who an encrypted archive is for: this agent's key, the account's recovery key and the
        organisation's (``archive_recipients``)."""
        if self.options.repository_key is None or not hasattr(self.plane, "recovery_state"):
            raise ConfigurationError(
                "options.encryption: encrypted archives are made by agents, with their own key; "
                "this connection has none"
            )
        beat = self.plane.heartbeat(version=__version__, platform=sys.platform)
        if beat.agent is None:
            raise ConfigurationError("the server did not say which agent this is")
        key = self.options.repository_key(beat.agent.id)
        return archive_recipients(
            cast(RecoveryPlane, self.plane), key, server=getattr(self.plane, "server_url", "")
        )

    def _archive(
        self,
        job: BackupJob,
        scanned: ScanResult,
        fmt: ArchiveFormat,
        cancel: CancelToken,
        recipients: list[str] | None = None,
    ) -> UploadResult:
        """Archive -> compress -> upload, streamed: three stages joined by bounded queues."""
        config, uploader, emit = job.config, job.uploader, self.emit
        assert uploader is not None
        totals = scanned.totals
        files_total = totals.files + totals.symlinks
        t0 = self.clock()
        upload_t0 = [t0]

        def archive_progress(stats: ArchiveStats) -> ArchiveProgress:
            left = max(0, totals.bytes - stats.bytes_read)
            rate, eta = rate_eta(stats.bytes_read, left, self.clock() - t0)
            return ArchiveProgress(
                config_id=config.id,
                files_done=stats.files,
                files_total=files_total,
                bytes_done=stats.bytes_read,
                bytes_total=totals.bytes,
                archive_bytes=uploader.size,
                rate=rate,
                eta=eta,
            )

        def upload_progress(uploaded: int, parts: int) -> UploadProgress:
            elapsed = max(1e-6, self.clock() - upload_t0[0])
            return UploadProgress(
                config_id=config.id,
                bytes_uploaded=uploaded,
                parts_done=parts,
                rate=uploaded / elapsed,
            )

        def on_started(log_id: str, multipart: bool) -> None:
            upload_t0[0] = self.clock()
            emit(
                UploadStarted(
                    config_id=config.id,
                    log_id=log_id,
                    filename=uploader.filename,
                    multipart=multipart,
                )
            )

        def on_file(path: str, size: int) -> None:
            emit(FileStarted(config_id=config.id, path=path, size=size))

        def on_error(problem: FileError) -> None:
            job.add_errors((problem,))
            emit(FileFailed(config_id=config.id, path=problem.path, message=problem.message))

        def on_waiting(waiting: Waiting) -> None:
            emit(
                UploadWaiting(
                    config_id=config.id,
                    waiting_for=waiting.waiting_for,
                    reason=waiting.reason,
                    waited=waiting.waited,
                    retry_in=waiting.retry_in,
                    gives_up_in=waiting.gives_up_in,
                )
            )

        uploader.on_started = on_started
        uploader.on_progress = lambda done, parts: emit.throttled(
            "upload", lambda: upload_progress(done, parts)
        )
        uploader.on_waiting = on_waiting
        uploader.on_resumed = lambda waited: emit(UploadResumed(config_id=config.id, waited=waited))
        # Encrypted: compress -> age -> upload; the encryptor is one more streamed stage.
        encryptor = AgeEncryptor(uploader.write, recipients) if recipients else None
        pipeline = ArchivePipeline(
            encryptor.write if encryptor is not None else uploader.write,
            fmt,
            gzip_level=self.options.gzip_level,
            zstd_level=self.options.zstd_level,
            threads=self.options.compress_threads,
            cancel=cancel,
            on_file=on_file if emit.active else None,
            on_progress=(lambda st: emit.throttled("archive", lambda: archive_progress(st)))
            if emit.active
            else None,
            on_error=on_error,
            max_errors=0,  # the job keeps the list
        )
        archiver = job.archiver = pipeline.archiver
        try:
            pipeline.write(scanned)
            if encryptor is not None:
                encryptor.close()
        except BaseException:
            if encryptor is not None:
                encryptor.abort()
            raise
        emit.throttled("archive", lambda: archive_progress(archiver.stats), force=True)
        result = uploader.finish()
        emit.throttled("upload", lambda: upload_progress(result.size, result.parts), force=True)
        return result

    def _warn_about_options(self, config: ConfigInfo) -> None:
        notes = []
        if config.options.type not in ("full", ""):
            notes.append(
                f"backup type {config.options.type!r} is not supported yet; making a full backup"
            )
        for note in notes:
            log.warning("%s: %s", config.name or config.id, note)
            self.send_log(
                "warning", f"Backup '{config.name or config.id}': {note}", {"configId": config.id}
            )
