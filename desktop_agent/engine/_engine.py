"""The backup engine: the spec's execution flow, over a ``ControlPlane`` and a ``Storage``.

    run:    heartbeat -> fetch configs -> backup(config) for each -> final heartbeat
    backup: check sources -> scan -> [archive -> compress -> upload] streamed -> complete

A config that fails (missing source, server refusal, storage failure, cancel) is reported to the server
(``/api/agent/log`` and ``backup/complete`` with ``status: failed``), and the run goes on with the next.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from .. import __version__
from ._cancel import CancelToken
from ._compress import (
    ArchiveFormat,
    OrderedPipe,
    archive_extension,
    make_compressor,
    pipe_capacity,
)
from ._errors import (
    AgentError,
    AuthenticationError,
    BackupCancelled,
    ConfigurationError,
    ConflictError,
    NetworkError,
    SourceError,
)
from ._events import (
    ArchiveProgress,
    BackupFailed,
    BackupFinished,
    ConfigStarted,
    Emitter,
    EventSink,
    FileFailed,
    FileStarted,
    RunFinished,
    RunStarted,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    UploadProgress,
    UploadStarted,
)
from ._scanner import ScanResult, ScanTotals, check_sources, normalize_source, scan
from ._settings import AgentSettings
from ._tar import Archiver, ArchiveStats
from ._transport.client import ApiClient
from ._transport.storage import HttpStorage
from ._upload import Uploader, UploadOptions, UploadResult
from .protocol import (
    BackupOptions,
    BackupResult,
    ConfigInfo,
    ControlPlane,
    FileError,
    RunResult,
    Storage,
)

__all__ = [
    "BackupEngine",
    "EngineOptions",
    "archive_filename",
    "archive_format",
    "printable",
    "write_archive",
]

log = logging.getLogger("desktop_agent.engine")

#: Per-file errors sent to the server with ``backup/complete`` (the rest are counted).
MAX_REPORTED_ERRORS = 1000
#: The server's limits on an error message and a path (docs/agent-api.md, backend schemas).
MAX_MESSAGE = 4000
MAX_PATH = 8192


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


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine archives and uploads (the agent settings' tuning part)."""

    temp_dir: Path | None = None
    """Where the scan list may spill to disk (a few bytes per file; never archive data)."""
    upload: UploadOptions = field(default_factory=UploadOptions)
    gzip_level: int = 6
    zstd_level: int = 1
    compress_threads: int | None = None
    """Compression threads; ``None``: one per core."""
    exclude_node_modules: bool = False
    default_excludes: bool = True
    version: str = __version__
    platform: str = sys.platform

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> EngineOptions:
        return cls(
            temp_dir=settings.effective_temp_dir,
            upload=UploadOptions(
                multipart_threshold=settings.multipart_threshold,
                part_size=settings.part_size,
                concurrency=settings.upload_concurrency,
            ),
            gzip_level=settings.gzip_level,
            zstd_level=settings.zstd_level,
            compress_threads=settings.compress_threads,
            exclude_node_modules=settings.exclude_node_modules,
        )


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
        threads = threads or os.cpu_count() or 1
        pipe = OrderedPipe(sink, capacity=pipe_capacity(fmt, threads))
        compressor = make_compressor(
            fmt, pipe, gzip_level=gzip_level, zstd_level=zstd_level, threads=threads
        )
        archiver = Archiver(
            compressor.write,
            cancel=cancel,
            max_errors=MAX_REPORTED_ERRORS,
            write_content=compressor.write_content,
            chunk_size=compressor.read_size,
        )
        for problem in scanned.errors:
            archiver.error(problem.path, problem.message)
        try:
            for kind, path, size, mtime_ns in scanned.raw_entries():
                archiver.add_path(kind, path, size, mtime_ns)
            archiver.finish()
            compressor.close()
            pipe.close()
        except BaseException:
            compressor.abort()
            pipe.abort()
            raise
    return archiver.stats


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class _Failure(Exception):
    """Internal: a backup failed for ``reason``; ``errors`` are the per-file problems so far."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Job:
    """The state of one config's backup, kept for the failure path."""

    config: ConfigInfo
    t0: float
    started: datetime
    sources: tuple[str, ...] = ()
    estimated: int = 0
    uploader: Uploader | None = None
    archiver: Archiver | None = None
    completing: bool = False
    """``backup/complete`` with ``completed`` was sent (the server decides from there)."""
    errors: list[FileError] = field(default_factory=list)
    error_count: int = 0

    def add_errors(self, problems: Sequence[FileError]) -> None:
        self.error_count += len(problems)
        room = MAX_REPORTED_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(problems[:room])

    def duration_ms(self, now: float) -> int:
        return int((now - self.t0) * 1000)


def select_configs(
    configs: Sequence[ConfigInfo], config_ids: Sequence[str] | None
) -> tuple[list[ConfigInfo], list[BackupResult]]:
    """The configs to run: all, or those named in ``config_ids`` (in that order, once each); an id
    not assigned to this agent gives a failed result instead."""
    if not config_ids:
        return list(configs), []
    by_id = {c.id: c for c in configs}
    selected: list[ConfigInfo] = []
    results: list[BackupResult] = []
    for config_id in dict.fromkeys(config_ids):
        if config_id in by_id:
            selected.append(by_id[config_id])
        else:
            results.append(
                BackupResult(
                    config_id=config_id,
                    status="failed",
                    error="no such config is assigned to this agent",
                )
            )
    return selected, results


class BackupEngine:
    """Runs backups. Thread-compatible: one backup at a time per engine.

    ``events`` receives progress events (see ``_events``); ``now`` and ``clock`` are injectable for
    tests. Create one from the agent's settings with ``BackupEngine.from_settings``.
    """

    def __init__(
        self,
        plane: ControlPlane,
        storage: Storage,
        options: EngineOptions | None = None,
        *,
        events: EventSink | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = plane
        self.storage = storage
        self.options = options or EngineOptions()
        self._emit = Emitter(events)
        self._now = now
        self._clock = clock
        self._owned: list[ApiClient | HttpStorage] = []

    @classmethod
    def from_settings(
        cls,
        settings: AgentSettings,
        api_key: str,
        *,
        events: EventSink | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> BackupEngine:
        """An engine talking to ``settings.server_url`` with ``api_key``. Close it when done."""
        if not settings.server_url:
            raise ConfigurationError(
                "no server URL: run `backapp-agent configure --server URL` first"
            )
        agent = f"backapp-agent/{__version__}"
        plane = ApiClient(settings.server_url, api_key, transport=transport, user_agent=agent)
        storage = HttpStorage(transport=transport, user_agent=agent)
        engine = cls(plane, storage, EngineOptions.from_settings(settings), events=events)
        engine._owned = [plane, storage]
        return engine

    def close(self) -> None:
        for client in self._owned:
            client.close()

    def __enter__(self) -> BackupEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the run ------------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        self.plane.heartbeat(version=self.options.version, platform=self.options.platform)

    def run(
        self, *, config_ids: Sequence[str] | None = None, cancel: CancelToken | None = None
    ) -> RunResult:
        """The spec's flow once: heartbeat, fetch the configs (all, or those in ``config_ids``), back
        each up, final heartbeat. Never raises for a failed config; a run that cannot start (server
        unreachable, key refused) returns a ``RunResult`` with ``error`` set."""
        try:
            self.heartbeat()
            configs = self.plane.list_configs()
        except AgentError as exc:
            self._emit(RunFinished(completed=0, failed=0, error=str(exc)))
            return RunResult((), error=str(exc))
        configs, results = select_configs(configs, config_ids)
        self._emit(RunStarted(configs=len(configs)))
        for config in configs:
            if cancel is not None and cancel.is_set():
                results.append(
                    BackupResult(
                        config_id=config.id,
                        config_name=config.name,
                        status="failed",
                        error=f"{cancel.reason} before it started",
                    )
                )
                continue
            results.append(self.backup(config, cancel=cancel))
        try:
            self.heartbeat()
        except AgentError as exc:
            log.warning("final heartbeat failed: %s", exc)
        self._cleanup_temp_dir()
        completed = sum(r.ok for r in results)
        self._emit(RunFinished(completed=completed, failed=len(results) - completed))
        return RunResult(tuple(results))

    def _cleanup_temp_dir(self) -> None:
        if self.options.temp_dir is not None:
            try:
                self.options.temp_dir.rmdir()  # only if empty: it may be shared
            except OSError:
                pass

    # -- one config ---------------------------------------------------------------------------------

    def backup(self, config: ConfigInfo, *, cancel: CancelToken | None = None) -> BackupResult:
        """Back up one config; never raises for a backup failure (the result says ``failed``)."""
        cancel = cancel or CancelToken()
        job = _Job(config=config, t0=self._clock(), started=self._now())
        job.sources = tuple(normalize_source(s.path) for s in config.sources)
        self._emit(ConfigStarted(config_id=config.id, config_name=config.name, sources=job.sources))
        try:
            upload = self._backup(job, cancel)
        except BackupCancelled as exc:
            reason = exc.reason
        except _Failure as exc:
            reason = exc.reason
        except ConflictError as exc:
            reason = exc.detail if job.completing else str(exc)
        except AgentError as exc:
            reason = str(exc)
        except OSError as exc:  # e.g. the temporary folder cannot be created
            reason = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
        except Exception as exc:  # a bug must cost one config, not the run
            log.exception("unexpected error in the backup of %s", config.id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
        else:
            return self._succeeded(job, upload)
        return self._failed(job, reason)

    def _backup(self, job: _Job, cancel: CancelToken) -> UploadResult:
        config = job.config
        if not job.sources:
            raise SourceError("the config has no source paths")
        fmt = archive_format(config.options)
        problems = check_sources(job.sources)
        if problems:
            job.add_errors(problems)
            raise SourceError("; ".join(f"{p.path}: {p.message}" for p in problems))
        self._warn_about_options(config)

        self._emit(ScanStarted(config_id=config.id, sources=job.sources))

        def scan_progress(t: ScanTotals) -> None:
            self._emit.throttled(
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
                self._emit(
                    FileFailed(config_id=config.id, path=problem.path, message=problem.message)
                )
            job.add_errors(scanned.errors)
            self._emit(
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
                filename=archive_filename(job.started, fmt),
                estimated_size=job.estimated,
                options=self.options.upload,
                cancel=cancel,
            )
            upload = self._archive(job, scanned, fmt, cancel)
        assert job.archiver is not None
        stats = job.archiver.stats
        job.completing = True
        status = self.plane.complete_backup(
            log_id=upload.log_id,
            status="completed",
            files_processed=stats.files,
            bytes_transferred=upload.size,
            duration_ms=job.duration_ms(self._clock()),
            errors=_error_list(job.errors, job.error_count),
            size=upload.size,
            sha256=upload.sha256,
        )
        if status != "completed":
            raise _Failure(f"the server recorded the backup as {status}")
        return upload

    def _archive(
        self, job: _Job, scanned: ScanResult, fmt: ArchiveFormat, cancel: CancelToken
    ) -> UploadResult:
        """Archive -> compress -> upload, streamed: three stages joined by bounded queues."""
        config, uploader, emit = job.config, job.uploader, self._emit
        assert uploader is not None
        totals = scanned.totals
        files_total = totals.files + totals.symlinks
        t0 = self._clock()
        upload_t0 = [t0]

        def archive_progress(stats: ArchiveStats) -> ArchiveProgress:
            elapsed = max(1e-6, self._clock() - t0)
            rate = stats.bytes_read / elapsed
            left = max(0, totals.bytes - stats.bytes_read)
            return ArchiveProgress(
                config_id=config.id,
                files_done=stats.files,
                files_total=files_total,
                bytes_done=stats.bytes_read,
                bytes_total=totals.bytes,
                archive_bytes=uploader.size,
                rate=rate,
                eta=left / rate if rate > 0 else None,
            )

        def upload_progress(uploaded: int, parts: int) -> UploadProgress:
            elapsed = max(1e-6, self._clock() - upload_t0[0])
            return UploadProgress(
                config_id=config.id,
                bytes_uploaded=uploaded,
                parts_done=parts,
                rate=uploaded / elapsed,
            )

        def on_started(log_id: str, multipart: bool) -> None:
            upload_t0[0] = self._clock()
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

        uploader.on_started = on_started
        uploader.on_progress = lambda done, parts: emit.throttled(
            "upload", lambda: upload_progress(done, parts)
        )
        threads = self.options.compress_threads or os.cpu_count() or 1
        pipe = OrderedPipe(uploader.write, capacity=pipe_capacity(fmt, threads))
        compressor = make_compressor(
            fmt,
            pipe,
            gzip_level=self.options.gzip_level,
            zstd_level=self.options.zstd_level,
            threads=threads,
        )
        archiver = job.archiver = Archiver(
            compressor.write,
            write_content=compressor.write_content,
            chunk_size=compressor.read_size,
            cancel=cancel,
            on_file=on_file if emit.active else None,
            on_progress=(lambda st: emit.throttled("archive", lambda: archive_progress(st)))
            if emit.active
            else None,
            on_error=on_error,
            max_errors=0,  # the job keeps the list
        )
        try:
            for kind, path, size, mtime_ns in scanned.raw_entries():
                archiver.add_path(kind, path, size, mtime_ns)
            archiver.finish()
            compressor.close()
            pipe.close()
        except BaseException:
            compressor.abort()
            pipe.abort()
            raise
        emit.throttled("archive", lambda: archive_progress(archiver.stats), force=True)
        result = uploader.finish()
        emit.throttled("upload", lambda: upload_progress(result.size, result.parts), force=True)
        return result

    def _succeeded(self, job: _Job, upload: UploadResult) -> BackupResult:
        config = job.config
        stats = job.archiver.stats if job.archiver is not None else ArchiveStats()
        result = BackupResult(
            config_id=config.id,
            config_name=config.name,
            status="completed",
            log_id=upload.log_id,
            filename=upload.filename,
            s3_path=upload.s3_path,
            size=upload.size,
            sha256=upload.sha256,
            files_processed=stats.files,
            bytes_read=stats.bytes_read,
            duration_ms=job.duration_ms(self._clock()),
            started_at=_iso(job.started),
            finished_at=_iso(self._now()),
            errors=tuple(job.errors),
            multipart=upload.multipart,
        )
        name = config.name or config.id
        if job.error_count:
            self._send_log(
                "warning",
                f"Backup '{name}' completed with {job.error_count} file error(s)",
                {
                    "configId": config.id,
                    "logId": result.log_id,
                    "errors": _error_list(
                        job.errors, job.error_count, limit=20, width=500, path_width=500
                    ),
                },
            )
        else:
            self._send_log(
                "info",
                f"Backup '{name}' completed: {result.files_processed} files, {result.size} bytes",
                {"configId": config.id, "logId": result.log_id, "filename": result.filename},
            )
        self._emit(
            BackupFinished(
                config_id=config.id,
                config_name=config.name,
                log_id=upload.log_id,
                filename=upload.filename,
                files=result.files_processed,
                bytes=result.bytes_read,
                archive_size=result.size,
                sha256=upload.sha256,
                duration_ms=result.duration_ms,
                rate=result.bytes_read / max(0.001, result.duration_ms / 1000),
                errors=job.error_count,
            )
        )
        return result

    def _failed(self, job: _Job, reason: str) -> BackupResult:
        """Leave nothing half-recorded as success: abort the upload, mark the log failed (opening one
        if the failure came before ``backup/start``), tell the server why."""
        config, uploader = job.config, job.uploader
        log.error("backup of %r (%s) failed: %s", config.name, config.id, reason)
        stats = job.archiver.stats if job.archiver is not None else ArchiveStats()
        reason = printable(reason)[:MAX_MESSAGE]
        log_id = uploader.log_id if uploader is not None else None
        if uploader is not None:
            uploader.stop()
        start_attempted = uploader is not None and uploader.start_attempted
        if log_id is None and not start_attempted:
            log_id = self._open_log_for_failure(job)
        if log_id is not None and not job.completing:
            try:
                # Records the reason and the per-file errors; the server aborts a multipart upload.
                self.plane.complete_backup(
                    log_id=log_id,
                    status="failed",
                    files_processed=stats.files,
                    bytes_transferred=uploader.uploaded if uploader is not None else 0,
                    duration_ms=job.duration_ms(self._clock()),
                    errors=_error_list(job.errors, job.error_count),
                    error=reason,
                )
            except ConflictError:
                pass  # already finished as failed (e.g. by a failed verification)
            except AgentError as exc:
                log.warning("could not mark log %s as failed: %s", log_id, exc)
        if uploader is not None and uploader.multipart:
            uploader.abort(reason)  # idempotent; frees the parts even if the call above failed
        self._send_log(
            "error",
            f"Backup '{config.name or config.id}' failed: {reason}",
            {
                "configId": config.id,
                "logId": log_id,
                "errors": _error_list(
                    job.errors, job.error_count, limit=20, width=500, path_width=500
                ),
            },
        )
        duration = job.duration_ms(self._clock())
        self._emit(
            BackupFailed(
                config_id=config.id,
                config_name=config.name,
                log_id=log_id,
                reason=reason,
                duration_ms=duration,
            )
        )
        return BackupResult(
            config_id=config.id,
            config_name=config.name,
            status="failed",
            error=reason,
            log_id=log_id,
            filename=uploader.filename if uploader is not None else None,
            s3_path=(uploader.s3_path or None) if uploader is not None else None,
            files_processed=stats.files,
            bytes_read=stats.bytes_read,
            duration_ms=duration,
            started_at=_iso(job.started),
            finished_at=_iso(self._now()),
            errors=tuple(job.errors),
        )

    # -- reporting ----------------------------------------------------------------------------------

    def _warn_about_options(self, config: ConfigInfo) -> None:
        notes = []
        if config.options.encryption:
            notes.append(
                "options.encryption is set, but this agent does not encrypt archives itself: "
                "the archive relies on the storage's server-side encryption"
            )
        if config.options.type not in ("full", ""):
            notes.append(
                f"backup type {config.options.type!r} is not supported yet; making a full backup"
            )
        for note in notes:
            log.warning("%s: %s", config.name or config.id, note)
            self._send_log(
                "warning", f"Backup '{config.name or config.id}': {note}", {"configId": config.id}
            )

    def _open_log_for_failure(self, job: _Job) -> str | None:
        """A failure before ``backup/start`` (missing source, cancel during the scan...): open a log so
        that the failure shows in the backup history."""
        try:
            fmt = archive_format(job.config.options)
        except ConfigurationError:
            fmt = "gzip"
        try:
            response = self.plane.start_backup(
                config_id=job.config.id,
                filename=archive_filename(job.started, fmt),
                filesize=job.estimated,
                multipart=False,
            )
        except (NetworkError, AuthenticationError) as exc:
            log.warning("could not record the failure on the server: %s", exc)
            return None
        except AgentError as exc:
            log.warning("could not open a log for the failure: %s", exc)
            return None
        return response.log_id

    def _send_log(self, level: str, message: str, metadata: dict[str, object]) -> None:
        try:
            self.plane.send_log(level, message, metadata)
        except AgentError as exc:
            log.warning("could not send a log message to the server: %s", exc)


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not UTF-8 (possible on Linux; Python carries its
    bytes as lone surrogates) shows its odd bytes as ``\\xNN``. For JSON sent to the server."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _error_list(
    errors: Sequence[FileError],
    total: int,
    *,
    limit: int = MAX_REPORTED_ERRORS,
    width: int = MAX_MESSAGE,
    path_width: int = MAX_PATH,
) -> list[dict[str, str]]:
    """The ``errors`` of ``backup/complete``: at most ``limit`` ``{path, message}`` objects (cut to
    the server's limits), and a last one that counts the rest."""
    out = [
        {"path": printable(e.path)[:path_width], "message": printable(e.message)[:width]}
        for e in errors[:limit]
    ]
    if total > len(out):
        out.append({"message": f"... and {total - len(out)} more file errors"})
    return out
