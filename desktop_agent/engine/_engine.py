"""The backup engine: the spec's execution flow, over a ``ControlPlane`` and a ``Storage``.

    run:    heartbeat -> fetch configs -> backup(config) for each -> final heartbeat   (``_run``)
    backup: [back the config up, the way its kind says] -> complete

``BackupEngine.backup`` is the frame around one config: the events, the ``backup/complete`` that
records it, and the failure path. A config of ``type: incremental`` is a snapshot into the agent's
repository instead (``_repo.run.SnapshotBackup``, with its own frame: it commits or aborts itself
through the snapshot endpoints); every other config is one tar archive streamed to storage
(``BackupEngine._back_up``, ``_archive``).

A config that fails (missing source, server refusal, storage failure, cancel) is reported to the server
(``/api/agent/log`` and ``backup/complete`` with ``status: failed``), and the run goes on with the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import httpx

from ._archive import ArchiveBackup, archive_filename, archive_format
from ._cancel import CancelToken
from ._closing import OwnsClients
from ._errors import (
    AgentError,
    AuthenticationError,
    BackupCancelled,
    ConfigurationError,
    ConflictError,
    NetworkError,
)
from ._events import (
    BackupFinished,
    ConfigStarted,
    Emitter,
    EventSink,
)
from ._hooks import ConfigCommands
from ._job import (
    MAX_MESSAGE,
    BackupFailure,
    BackupJob,
    error_list,
    iso_z,
    printable,
    report_failure,
    size_text,
)
from ._options import EngineOptions
from ._repo.run import SnapshotBackup
from ._run import run_configs
from ._scanner import normalize_source
from ._settings import AgentSettings
from ._tar import ArchiveStats
from ._transport.bandwidth import agent_bandwidth, config_limits
from ._transport.connect import connect
from ._upload import BACKUP_CANCELLED, UploadResult, server_features
from .protocol import (
    AgentMode,
    BackupResult,
    CompleteBackup,
    ConfigInfo,
    ControlPlane,
    RunResult,
    StartBackup,
    Storage,
)

__all__ = ["BackupEngine", "connect"]

log = logging.getLogger("desktop_agent.engine")


class BackupEngine(OwnsClients):
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

    @classmethod
    def from_settings(
        cls,
        settings: AgentSettings,
        api_key: str,
        *,
        events: EventSink | None = None,
        transport: httpx.BaseTransport | None = None,
        mode: AgentMode | None = None,
    ) -> BackupEngine:
        """An engine talking to ``settings.server_url`` with ``api_key`` (``mode``: see
        ``ApiClient``). Close it when done."""
        plane, storage = connect(settings, api_key, transport, mode=mode)
        options = EngineOptions.from_settings(settings)
        return cls(plane, storage, options, events=events).owning(plane, storage)

    # -- the run ------------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        self.plane.heartbeat(version=self.options.version, platform=self.options.platform)

    def run(
        self, *, config_ids: Sequence[str] | None = None, cancel: CancelToken | None = None
    ) -> RunResult:
        """The spec's flow once: heartbeat, fetch the configs (all, or those in ``config_ids``), back
        each up, final heartbeat. Never raises for a failed config; a run that cannot start (server
        unreachable, key refused) returns a ``RunResult`` with ``error`` set."""
        return run_configs(
            self.plane,
            lambda config: self.backup(config, cancel=cancel),
            version=self.options.version,
            platform=self.options.platform,
            emit=self._emit,
            config_ids=config_ids,
            cancel=cancel,
            temp_dir=self.options.temp_dir,
        )

    # -- one config ---------------------------------------------------------------------------------

    def backup(self, config: ConfigInfo, *, cancel: CancelToken | None = None) -> BackupResult:
        """Back up one config; never raises for a backup failure (the result says ``failed``).
        Around it: the config's pre- and post-command (``_hooks``), and its own bandwidth limits
        in the agent's buckets while it runs."""
        cancel = cancel or CancelToken()
        commands = ConfigCommands(
            config, allowed=self.options.allow_server_commands, send_log=self._send_log
        )
        with agent_bandwidth().running(config.id, config_limits(config), cancel.is_set):
            result = self._backup_config(config, cancel, commands)
        commands.after(result.status)
        return result

    def _backup_config(
        self, config: ConfigInfo, cancel: CancelToken, commands: ConfigCommands
    ) -> BackupResult:
        if config.options.type == "incremental":
            # A snapshot into the agent's repository: its own frame (it starts, commits or aborts
            # itself through the snapshot endpoints).
            self._emit(
                ConfigStarted(
                    config_id=config.id,
                    config_name=config.name,
                    sources=tuple(normalize_source(s.path) for s in config.sources),
                )
            )
            return SnapshotBackup(
                self.plane,
                self.storage,
                self.options,
                self._emit,
                self._send_log,
                now=self._now,
                before=commands.before,
            ).run(config, cancel)
        job = BackupJob(config=config, t0=self._clock(), started=self._now())
        job.sources = tuple(normalize_source(s.path) for s in config.sources)
        self._emit(ConfigStarted(config_id=config.id, config_name=config.name, sources=job.sources))
        cancelled = False
        try:
            commands.before(cancel)
            upload = self._back_up(job, cancel)
            self._complete(job, upload)
        except BackupCancelled as exc:
            reason, cancelled = exc.reason, exc.deliberate
        except BackupFailure as exc:
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
        return self._failed(job, reason, cancelled=cancelled)

    def _back_up(self, job: BackupJob, cancel: CancelToken) -> UploadResult:
        """Where the engine picks how a config is backed up. There is one way today: one tar
        archive, streamed to storage. Another kind of backup (e.g. snapshots) is chosen here."""
        kind = ArchiveBackup(
            self.plane,
            self.storage,
            self.options,
            emit=self._emit,
            clock=self._clock,
            send_log=self._send_log,
        )
        return kind.run(job, cancel)

    def _complete(self, job: BackupJob, upload: UploadResult) -> None:
        """Record the uploaded backup on the server as completed (the server may still refuse it,
        e.g. when its own check of the upload fails)."""
        assert job.archiver is not None
        stats = job.archiver.stats
        job.completing = True
        status = self.plane.complete_backup(
            CompleteBackup(
                log_id=upload.log_id,
                status="completed",
                files_processed=stats.files,
                bytes_transferred=upload.size,
                duration_ms=job.duration_ms(self._clock()),
                errors=error_list(job.errors, job.error_count),
                size=upload.size,
                sha256=upload.sha256,
            )
        )
        if status != "completed":
            raise BackupFailure(f"the server recorded the backup as {status}")

    def _succeeded(self, job: BackupJob, upload: UploadResult) -> BackupResult:
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
            started_at=iso_z(job.started),
            finished_at=iso_z(self._now()),
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
                    "errors": error_list(
                        job.errors, job.error_count, limit=20, width=500, path_width=500
                    ),
                },
            )
        else:
            self._send_log(
                "info",
                f"Backup '{name}' completed: {result.files_processed} "
                f"file{'' if result.files_processed == 1 else 's'}, {size_text(result.size)}",
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

    def _failed(self, job: BackupJob, reason: str, *, cancelled: bool = False) -> BackupResult:
        """Leave nothing half-recorded as success: abort the upload, mark the log failed (opening one
        if the failure came before ``backup/start``), tell the server why. A ``cancelled`` backup is
        recorded as such where the server knows the status (``backup-cancelled``), else as failed;
        it opens no log of its own (a cancel is not worth a line in the history)."""
        config, uploader = job.config, job.uploader
        if cancelled:
            log.info("backup of %r (%s) cancelled: %s", config.name, config.id, reason)
        else:
            log.error("backup of %r (%s) failed: %s", config.name, config.id, reason)
        stats = job.archiver.stats if job.archiver is not None else ArchiveStats()
        reason = printable(reason)[:MAX_MESSAGE]
        log_id = uploader.log_id if uploader is not None else None
        if uploader is not None:
            uploader.stop()
        start_attempted = uploader is not None and uploader.start_attempted
        if log_id is None and not start_attempted and not cancelled:
            log_id = self._open_log_for_failure(job)
        status = "failed"
        if cancelled and BACKUP_CANCELLED in server_features(self.plane):
            status = "cancelled"
        if log_id is not None and not job.completing:
            try:
                # Records the reason and the per-file errors; the server aborts a multipart upload.
                self.plane.complete_backup(
                    CompleteBackup(
                        log_id=log_id,
                        status=status,
                        files_processed=stats.files,
                        bytes_transferred=uploader.uploaded if uploader is not None else 0,
                        duration_ms=job.duration_ms(self._clock()),
                        errors=error_list(job.errors, job.error_count),
                        error=reason,
                    )
                )
            except ConflictError:
                pass  # already finished as failed (e.g. by a failed verification)
            except AgentError as exc:
                log.warning("could not mark log %s as failed: %s", log_id, exc)
        if uploader is not None and uploader.multipart:
            uploader.abort(reason)  # idempotent; frees the parts even if the call above failed
        failed = report_failure(
            self._send_log,
            self._emit,
            config,
            log_id=log_id,
            reason=reason,
            cancelled=cancelled,
            errors=error_list(job.errors, job.error_count, limit=20, width=500, path_width=500),
            duration_ms=lambda: job.duration_ms(self._clock()),
            problems=job.errors,
            started=job.started,
            now=self._now,
        )
        return replace(
            failed,
            filename=uploader.filename if uploader is not None else None,
            s3_path=(uploader.s3_path or None) if uploader is not None else None,
            files_processed=stats.files,
            bytes_read=stats.bytes_read,
        )

    # -- reporting ----------------------------------------------------------------------------------

    def _open_log_for_failure(self, job: BackupJob) -> str | None:
        """A failure before ``backup/start`` (missing source, cancel during the scan...): open a log so
        that the failure shows in the backup history."""
        try:
            fmt = archive_format(job.config.options)
        except ConfigurationError:
            fmt = "gzip"
        try:
            response = self.plane.start_backup(
                StartBackup(
                    config_id=job.config.id,
                    filename=archive_filename(job.started, fmt),
                    filesize=job.estimated,
                    multipart=False,
                )
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
