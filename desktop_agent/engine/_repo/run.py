"""``SnapshotBackup``: how ``BackupEngine`` backs up a config of ``type: incremental`` — the frame
around ``take_snapshot`` (sources checked, the repository opened with this machine's key and cache,
events, the result and the log line), beside ``ArchiveBackup`` for full archives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import cast

from .._cancel import CancelToken
from .._errors import AgentError, BackupCancelled, ConfigurationError, SourceError
from .._events import BackupFinished, Emitter, UploadStarted
from .._job import MAX_MESSAGE, error_list, iso_z, printable, report_failure
from .._options import EngineOptions
from .._recovery.account import RecoveryPlane, keep_wrapped
from .._scanner import check_sources, normalize_source, source_problems_text
from ..protocol import BackupResult, ConfigInfo, FileError
from ..repo_protocol import ObjectStore, RepoPlane, SnapshotStarted
from .cache import Cache, cache_path, snapshot_name
from .crypto import RepoKeys
from .repository import Repository
from .snapshot import SnapshotJob, SnapshotOutcome, take_snapshot

log = logging.getLogger("desktop_agent.engine")

SendLog = Callable[[str, str, dict[str, object]], None]


@dataclass(frozen=True)
class SnapshotBackup:
    """Backs up one incremental config; ``run`` never raises for a failed backup."""

    plane: object
    storage: object
    options: EngineOptions
    emit: Emitter
    send_log: SendLog
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    before: Callable[[CancelToken], None] | None = None
    """Runs before the scan (the config's pre-command); an ``AgentError`` from it stops the
    backup, recorded in the history."""

    def run(self, config: ConfigInfo, cancel: CancelToken) -> BackupResult:
        started_at = self.now()
        t0 = time.monotonic()
        sources = tuple(normalize_source(s.path) for s in config.sources)
        started: list[SnapshotStarted] = []
        try:
            plane = self._repo_plane()
            if self.before is not None:  # first: a pre-command may mount the sources
                try:
                    self.before(cancel)
                except BackupCancelled:
                    raise
                except AgentError as exc:
                    raise _StoppedBefore(str(exc)) from exc
            if not sources:
                raise SourceError("the config has no source paths")
            problems = check_sources(sources)
            if problems:
                raise _SourcesMissing(problems)
            job = SnapshotJob(
                config_id=config.id,
                config_name=config.name,
                sources=sources,
                excludes=tuple(config.excludes),
                default_excludes=self.options.default_excludes,
                exclude_node_modules=self.options.exclude_node_modules
                or config.options.exclude_node_modules,
                skip_paths=(
                    (self.options.temp_dir, self.options.cache_dir)
                    if self.options.temp_dir is not None
                    else (self.options.cache_dir,)
                ),
                temp_dir=self.options.temp_dir,
            )

            def on_started(s: SnapshotStarted) -> None:
                started.append(s)
                self.emit(
                    UploadStarted(
                        config_id=config.id,
                        log_id=s.backup_id,
                        filename=snapshot_name(s.backup_id),
                        multipart=False,
                    )
                )

            outcome = take_snapshot(
                plane, self._open_repo, job, emit=self.emit, cancel=cancel, on_started=on_started
            )
        except (_SourcesMissing, _StoppedBefore) as exc:
            # The reason names the missing folders (they are not also file errors), or what the
            # pre-command said.
            return self._failed(config, plane_or_none(self), started, t0, started_at, exc, ())
        except BackupCancelled as exc:
            return self._failed(config, None, started, t0, started_at, exc, ())
        except AgentError as exc:
            return self._failed(config, None, started, t0, started_at, exc, ())
        except OSError as exc:
            return self._failed(config, None, started, t0, started_at, exc, ())
        except Exception as exc:  # a bug must cost one config, not the run
            log.exception("unexpected error in the snapshot of %s", config.id)
            return self._failed(config, None, started, t0, started_at, exc, ())
        return self._succeeded(config, outcome, started_at)

    # --- the pieces ----------------------------------------------------------------------------

    def _repo_plane(self) -> RepoPlane:
        if not hasattr(self.plane, "snapshot_start"):
            raise ConfigurationError(
                "incremental backups run on agents; this connection cannot make snapshots"
            )
        return cast(RepoPlane, self.plane)

    def _open_repo(self, started: SnapshotStarted) -> Repository:
        if self.options.repository_key is None:
            raise ConfigurationError("this agent has no place to keep a repository key")
        key = self.options.repository_key(started.agent_id)
        if hasattr(self.plane, "recovery_state"):
            keep_wrapped(
                cast(RecoveryPlane, self.plane), key, server=getattr(self.plane, "server_url", "")
            )
        return Repository(
            keys=RepoKeys.derive(key),
            cache=Cache(cache_path(self.options.cache_dir, started.agent_id)),
            plane=self._repo_plane(),
            store=cast(ObjectStore, self.storage),
        )

    def _succeeded(
        self, config: ConfigInfo, outcome: SnapshotOutcome, started_at: datetime
    ) -> BackupResult:
        name = config.name or config.id
        errors = outcome.errors
        result = BackupResult(
            config_id=config.id,
            config_name=config.name,
            status="completed",
            log_id=outcome.backup_id,
            filename=snapshot_name(outcome.backup_id),
            size=outcome.new_bytes,
            files_processed=outcome.files,
            bytes_read=outcome.bytes_read,
            duration_ms=outcome.duration_ms,
            started_at=iso_z(started_at),
            finished_at=iso_z(self.now()),
            errors=errors[:100],
            backup_type="incremental",
            total_bytes=outcome.bytes,
        )
        if errors:
            self.send_log(
                "warning",
                f"Backup '{name}' completed with {len(errors)} file error(s)",
                {
                    "configId": config.id,
                    "logId": outcome.backup_id,
                    "errors": error_list(
                        list(errors), len(errors), limit=20, width=500, path_width=500
                    ),
                },
            )
        else:
            self.send_log(
                "info",
                f"Backup '{name}' completed: {outcome.files} files, "
                f"{outcome.new_bytes} new bytes uploaded",
                {"configId": config.id, "logId": outcome.backup_id},
            )
        self.emit(
            BackupFinished(
                config_id=config.id,
                config_name=config.name,
                log_id=outcome.backup_id,
                filename=snapshot_name(outcome.backup_id),
                files=outcome.files,
                bytes=outcome.bytes,
                archive_size=outcome.new_bytes,
                sha256="",
                duration_ms=outcome.duration_ms,
                rate=outcome.bytes_read / max(0.001, outcome.duration_ms / 1000),
                errors=len(errors),
                backup_type="incremental",
            )
        )
        return result

    def _failed(
        self,
        config: ConfigInfo,
        plane: RepoPlane | None,
        started: list[SnapshotStarted],
        t0: float,
        started_at: datetime,
        exc: BaseException,
        problems: tuple[FileError, ...] | list[FileError],
    ) -> BackupResult:
        cancelled = isinstance(exc, BackupCancelled) and exc.deliberate
        reason = exc.reason if isinstance(exc, BackupCancelled) else str(exc) or type(exc).__name__
        reason = printable(reason)[:MAX_MESSAGE]
        if cancelled:
            log.info("snapshot of %r (%s) cancelled: %s", config.name, config.id, reason)
        else:
            log.error("snapshot of %r (%s) failed: %s", config.name, config.id, reason)
        backup_id = started[0].backup_id if started else None
        if backup_id is None and plane is not None:
            # A failure before the snapshot started (a missing source): open and abort one, so
            # that the failure shows in the backup history.
            try:
                from ..repo_protocol import StartSnapshot

                backup_id = plane.snapshot_start(StartSnapshot(config.id)).backup_id
                plane.snapshot_abort(backup_id, reason)
            except AgentError as err:
                log.warning("could not record the failure on the server: %s", err)
                backup_id = None
        failed = report_failure(
            self.send_log,
            self.emit,
            config,
            log_id=backup_id,
            reason=reason,
            cancelled=cancelled,
            errors=error_list(list(problems), len(problems), limit=20, width=500),
            duration_ms=lambda: int((time.monotonic() - t0) * 1000),
            problems=problems,
            started=started_at,
            now=self.now,
        )
        return replace(failed, backup_type="incremental")


class _SourcesMissing(SourceError):
    def __init__(self, problems: list[FileError]) -> None:
        self.problems = tuple(problems)
        super().__init__(source_problems_text(problems))


class _StoppedBefore(AgentError):
    """The pre-command failed, or the config's commands may not run here."""


def plane_or_none(backup: SnapshotBackup) -> RepoPlane | None:
    return cast(RepoPlane, backup.plane) if hasattr(backup.plane, "snapshot_start") else None
