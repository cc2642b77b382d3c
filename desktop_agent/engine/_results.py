"""Results of a backup and of a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BackupResult", "FileError", "RunResult"]


@dataclass(frozen=True, slots=True)
class FileError:
    """A per-file problem: the file was skipped or archived incompletely, the backup went on."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupResult:
    """The outcome of one config's backup."""

    config_id: str
    config_name: str = ""
    status: Literal["completed", "failed"]
    error: str | None = None
    """Why the backup failed (``None`` when it completed)."""
    log_id: str | None = None
    filename: str | None = None
    s3_path: str | None = None
    size: int = 0
    """Bytes of the archive as uploaded."""
    sha256: str | None = None
    files_processed: int = 0
    bytes_read: int = 0
    """Bytes of file content read from disk."""
    duration_ms: int = 0
    started_at: str = ""
    finished_at: str = ""
    errors: tuple[FileError, ...] = ()
    multipart: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict[str, object]:
        return {
            "configId": self.config_id,
            "configName": self.config_name,
            "status": self.status,
            "error": self.error,
            "logId": self.log_id,
            "filename": self.filename,
            "s3Path": self.s3_path,
            "size": self.size,
            "sha256": self.sha256,
            "filesProcessed": self.files_processed,
            "bytesRead": self.bytes_read,
            "duration": self.duration_ms,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "errorCount": len(self.errors),
            "errors": [e.to_json() for e in self.errors[:100]],
            "multipart": self.multipart,
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of a run: one result per config, and a run-level error if the run could not even
    start (server unreachable, key refused)."""

    results: tuple[BackupResult, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)

    @property
    def has_file_errors(self) -> bool:
        return any(r.errors for r in self.results)
