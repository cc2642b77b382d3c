"""Restore drills: prove a snapshot restorable by restoring a random sample of its files.

The sample goes through the real restore path (``SnapshotRestorer``, as ``backapp-agent
restore`` uses it) into a temporary folder; each restored file is then cut into chunks again and
compared with the chunk ids the snapshot records, and the folder is deleted. What the restore
took is measured: the time to the first byte of file data, the rate while the sample came in,
and from both the time a restore of the whole snapshot would take.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import AgentError
from ..repo_protocol import ObjectBody, ObjectStore
from .chunker import Chunker
from .errors import MissingObject, RepositoryError
from .format import Node
from .repository import Repository
from .restore import SnapshotRestorer, display, walk
from .verify import MAX_PROBLEMS, Problem

log = logging.getLogger("desktop_agent.engine.repo")


@dataclass(slots=True)
class DrillResult:
    """One drill of one config's newest snapshot."""

    config_id: str
    config_name: str
    backup_id: str
    sample: int = 0
    """Files chosen."""
    files: int = 0
    """Files restored and verified."""
    bytes: int = 0
    duration_ms: int = 0
    first_byte_ms: int | None = None
    throughput: float | None = None
    """Bytes per second while the sample came in."""
    snapshot_bytes: int = 0
    projected_seconds: float | None = None
    """A restore of the whole snapshot at the measured rate."""
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None and self.files == self.sample

    def to_json(self, *, paths: bool = False) -> dict[str, Any]:
        """The drill as ``POST /api/agent/drill`` takes it (``paths``: with the affected paths,
        for this machine's own output)."""
        out: dict[str, Any] = {
            "configId": self.config_id,
            "backupId": self.backup_id,
            "ok": self.ok,
            "sample": self.sample,
            "files": self.files,
            "bytes": self.bytes,
            "duration": self.duration_ms,
            "timeToFirstByte": self.first_byte_ms,
            "throughput": self.throughput,
            "snapshotBytes": self.snapshot_bytes,
            "projectedSeconds": self.projected_seconds,
            "error": self.error[:1000] if self.error else None,
            "problems": [p.to_json(paths=paths) for p in self.problems[:MAX_PROBLEMS]],
        }
        if paths:
            out["configName"] = self.config_name
        return out


class _FirstByte:
    """The repository's storage, noting when the first download after ``arm`` came back."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.armed = False
        self.first: float | None = None
        self._lock = threading.Lock()

    def put_object(self, url: str, body: ObjectBody, headers: Mapping[str, str]) -> bool:
        return self.inner.put_object(url, body, headers)

    def get_object(self, url: str, *, start: int | None = None, end: int | None = None) -> bytes:
        data = self.inner.get_object(url, start=start, end=end)
        self._arrived()
        return data

    def iter_object(
        self, url: str, *, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        for piece in self.inner.iter_object(url, start=start, end=end):
            self._arrived()
            yield piece

    def _arrived(self) -> None:
        with self._lock:
            if self.armed and self.first is None:
                self.first = time.monotonic()


def _sample(
    repo: Repository, root: bytes, size: int, rng: random.Random
) -> list[tuple[tuple[bytes, ...], Node]]:
    """A uniform random sample of ``size`` files (reservoir sampling: one pass, bounded memory);
    files with content first, empty ones only when there are too few of those."""
    full: list[tuple[tuple[bytes, ...], Node]] = []
    empty: list[tuple[tuple[bytes, ...], Node]] = []
    seen = 0
    for parts, node in walk(repo, root):
        if node.type != "file":
            continue
        if node.size == 0:
            if len(empty) < size:
                empty.append((parts, node))
            continue
        seen += 1
        if len(full) < size:
            full.append((parts, node))
        else:
            j = rng.randrange(seen)
            if j < size:
                full[j] = (parts, node)
    return full + empty[: max(0, size - len(full))]


def _matches(repo: Repository, path: Path, node: Node) -> str | None:
    """Why the restored file differs from the snapshot's record of it, or None."""
    try:
        size = path.stat().st_size
        if size != node.size:
            return f"restored with {size} bytes instead of {node.size}"
        with open(path, "rb", buffering=0) as fh:
            chunker = Chunker(repo.keys.chunker_seed)
            ids = [repo.keys.blob_id(c) for c in chunker.chunks(fh, size)]
    except OSError as exc:
        return f"cannot read the restored file: {exc.strerror or exc}"
    if ids != node.content:
        return "its restored content does not match the snapshot's chunk ids"
    return None


def run_drill(
    repo: Repository,
    *,
    config_id: str,
    config_name: str,
    backup_id: str,
    sample: int,
    temp_root: Path,
    workers: int = 4,
    rng: random.Random | None = None,
) -> DrillResult:
    """Restore ``sample`` random files of snapshot ``backup_id`` into a folder under
    ``temp_root``, verify them, delete them, and measure (see the module's docstring)."""
    result = DrillResult(config_id, config_name, backup_id)
    started = time.monotonic()
    try:
        doc = repo.snapshot(backup_id)
    except RepositoryError as exc:
        result.error = f"the snapshot cannot be read: {exc}"
        kind = "missing_snapshot" if isinstance(exc, MissingObject) else "unreadable"
        result.problems.append(Problem(kind, backup_id, str(exc)))
        return result
    result.snapshot_bytes = doc.summary.bytes
    try:
        chosen = _sample(repo, doc.tree, sample, rng or random.SystemRandom())
    except RepositoryError as exc:
        result.error = f"the snapshot's folders cannot be read: {exc}"
        return result
    result.sample = len(chosen)
    wanted = {display(parts): node for parts, node in chosen}
    folders = {display(parts[:i]) for parts, _ in chosen for i in range(1, len(parts))}
    temp_root.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="backapp-drill-", dir=temp_root))
    probe = _FirstByte(repo.store)
    repo.store = probe
    try:
        restorer = SnapshotRestorer(repo, workers=workers)
        probe.armed = True
        began = time.monotonic()
        report = restorer.restore(
            doc.tree,
            target,
            select=lambda path, is_dir: not is_dir and path in wanted,
            descend=lambda folder: folder in folders,
        )
        finished = time.monotonic()
        failed = {path for path, _ in report.errors}
        for path, why in report.errors:
            result.problems.append(
                Problem(
                    "restore_failed", "", f"a sampled file could not be restored: {why}", (path,)
                )
            )
        for path, node in wanted.items():
            if path in failed:
                continue
            on_disk = target.joinpath(*path.split("/"))
            wrong = _matches(repo, on_disk, node)
            if wrong is not None:
                result.problems.append(
                    Problem("content_mismatch", "", f"a sampled file {wrong}", (path,))
                )
                continue
            result.files += 1
            result.bytes += node.size
    except (AgentError, OSError) as exc:
        result.error = f"the restore failed: {exc}"
        return result
    finally:
        repo.store = probe.inner
        shutil.rmtree(target, ignore_errors=True)
        result.duration_ms = int((time.monotonic() - started) * 1000)
    first = probe.first if probe.first is not None else began
    result.first_byte_ms = int((first - began) * 1000) if probe.first is not None else None
    moving = finished - first
    if result.bytes and moving > 0:
        result.throughput = result.bytes / max(moving, 1e-3)
        result.projected_seconds = (first - began) + result.snapshot_bytes / result.throughput
    elif result.snapshot_bytes == 0 or result.sample == 0:
        result.projected_seconds = finished - began
    if result.problems:
        bad = len({p.paths for p in result.problems})
        result.error = (
            f"{bad} of {result.sample} sampled files could not be restored exactly: "
            f"{result.problems[0].message}"
        )
    log.info(
        "restore drill of %s: %d of %d files verified in %d ms",
        config_name or config_id,
        result.files,
        result.sample,
        result.duration_ms,
    )
    return result


def remove_stale(temp_root: Path) -> None:
    """Delete drill folders a killed agent left behind."""
    try:
        for entry in temp_root.glob("backapp-drill-*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
    except OSError as exc:
        log.debug("could not tidy %s: %s", os.fspath(temp_root), exc)
