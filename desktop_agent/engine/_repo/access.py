"""``Snapshots``: reading this machine's snapshots — list them, browse one, restore all or part of
one — for the command line and the tray app. Backing up is ``BackupEngine``'s job.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ... import __version__
from .._cancel import CancelToken
from .._errors import AgentError, ConfigurationError, KeyStoreError, RestoreError
from .._events import (
    Emitter,
    EventSink,
    RestoreFailed,
    RestoreFinished,
    RestoreProgress,
    RestoreSkipped,
    RestoreStarted,
)
from .._recovery.account import Recovery, RecoveryPlane
from .._restore.planning import PathFilter, RestoreOptions
from .._restore.restorer import RestoreResult
from .._settings import AgentSettings, config_dir, default_cache_dir
from ..protocol import BackupInfo
from ..repo_protocol import ObjectStore, RepoPlane
from .cache import Cache
from .crypto import RepoKeys
from .format import Node
from .keys import RepoKeyStore
from .repository import Repository
from .restore import RestoreReport, SnapshotRestorer, display, lookup, walk
from .run import cache_path, snapshot_name


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One path of a snapshot (``ls``): ``path`` is ``/``-separated from the file system's root,
    as ``--path`` takes it."""

    path: str
    kind: str
    """``file``, ``dir`` or ``symlink``."""
    size: int
    mode: int
    mtime_ns: int
    target: str = ""


class Snapshots:
    """This agent's snapshots. ``client`` is the agent API (``ApiClient``), ``store`` the
    pre-signed storage (``HttpStorage``); the repository key comes from this machine's keychain
    (``RepoKeyStore``), never from the server."""

    def __init__(
        self,
        client: Any,
        store: ObjectStore,
        *,
        server_url: str,
        keys: RepoKeyStore | None = None,
        cache_dir: Path | None = None,
        workers: int = 4,
        recovery_code: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.server_url = server_url
        self.keys = keys or RepoKeyStore(config_dir())
        self.cache_dir = cache_dir or default_cache_dir()
        self.workers = workers
        self.recovery_code = recovery_code
        """Used only when this machine holds no key: the key is then unwrapped with it (and put
        back in the keychain) from the server's wrapped copy."""
        self._repo: Repository | None = None
        self._owned: list[Any] = []

    @classmethod
    def from_settings(
        cls, settings: AgentSettings, api_key: str, *, recovery_code: str | None = None
    ) -> Snapshots:
        from .._engine import connect

        client, storage = connect(settings, api_key)
        snapshots = cls(
            client, storage, server_url=settings.server_url or "", recovery_code=recovery_code
        )
        snapshots._owned = [client, storage]
        return snapshots

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
        for thing in self._owned:
            thing.close()

    def __enter__(self) -> Snapshots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the repository --------------------------------------------------------------------------

    def repository(self) -> Repository:
        """The agent's repository, opened with this machine's key (checked against the
        repository's config); ``RestoreError`` when this machine has no key for it."""
        if self._repo is not None:
            return self._repo
        beat = self.client.heartbeat(version=__version__, platform=sys.platform)
        if beat.agent is None:
            raise ConfigurationError("the server did not say which agent this is")
        agent_id = beat.agent.id
        try:
            key = self.keys.load(f"{self.server_url}#{agent_id}")
        except KeyStoreError as exc:
            raise RestoreError(str(exc)) from exc
        if key is None and self.recovery_code is not None:
            key = Recovery(
                cast(RecoveryPlane, self.client),
                self.keys,
                server_url=self.server_url,
                agent_id=agent_id,
            ).recover_key(self.recovery_code)
        if key is None:
            raise RestoreError(
                "this machine holds no key for its snapshots (it never made one, or the keychain "
                "entry was lost): restore with --recovery-code-stdin and the account's recovery "
                "code"
            )
        repo = Repository(
            keys=RepoKeys.derive(key),
            cache=Cache(cache_path(self.cache_dir, agent_id)),
            plane=cast(RepoPlane, self.client),
            store=self.store,
            workers=self.workers,
        )
        repo.open(None, None)
        self._repo = repo
        return repo

    # --- listing ---------------------------------------------------------------------------------

    def list(self, *, config_id: str | None = None, limit: int = 100) -> list[BackupInfo]:
        """The completed snapshots of this agent's configs, newest first."""
        found: list[BackupInfo] = self.client.list_backups(config_id=config_id, limit=1000)
        return [b for b in found if b.type == "incremental"][:limit]

    def entries(
        self, backup_id: str, path: str = "", *, recursive: bool = True
    ) -> Iterator[SnapshotEntry]:
        """Every path of a snapshot below ``path`` (all of it when empty), folders first; with
        ``recursive=False`` only the folder's own entries (one listing read: a browser that
        opens folders as they are expanded)."""
        repo = self.repository()
        root = repo.snapshot(backup_id).tree
        start = lookup(repo, root, path)
        if start is None:
            raise RestoreError(f"{path}: no such path in the snapshot")
        prefix = tuple(
            p.encode("utf-8", "surrogateescape") for p in path.split("/") if p not in ("", ".")
        )
        if start.type != "dir":
            yield _entry(prefix, start)
            return
        if start.subtree is None:
            return
        for parts, node in walk(
            repo, start.subtree, prefix=prefix, descend=None if recursive else (lambda _: False)
        ):
            yield _entry(parts, node)

    # --- restoring -------------------------------------------------------------------------------

    def restore(
        self,
        backup_id: str,
        options: RestoreOptions,
        *,
        events: EventSink | None = None,
        cancel: CancelToken | None = None,
    ) -> RestoreResult:
        """Restore a snapshot, or the paths ``options.patterns`` select, into ``options.target``
        (or in place). Only the packs (or ranges of packs) holding the wanted files are
        downloaded; every chunk is checked against its id. Existing files are never silently
        replaced: one with other content gets the restored copy beside it, unless
        ``options.overwrite``. Per-file problems are in ``skipped``; ``RestoreError`` when the
        snapshot itself cannot be read."""
        emit = Emitter(events)
        started = time.monotonic()
        options.check()
        target = Path("/") if options.in_place else options.target
        try:
            repo = self.repository()
            doc = repo.snapshot(backup_id)
            chosen = PathFilter(options.patterns)
            emit(
                RestoreStarted(
                    backup_id=backup_id,
                    filename=snapshot_name(backup_id),
                    size=doc.summary.bytes,
                    target=options.target_label,
                )
            )

            def progress(report: RestoreReport, files: int, total: int) -> None:
                elapsed = max(time.monotonic() - started, 1e-6)
                rate = report.downloaded / elapsed
                emit(
                    RestoreProgress(
                        backup_id=backup_id,
                        bytes_downloaded=report.downloaded,
                        size=total,
                        files=report.files,
                        bytes_written=report.bytes,
                        rate=rate,
                        eta=(total - report.bytes) / (report.bytes / elapsed)
                        if report.bytes
                        else None,
                    )
                )

            restorer = SnapshotRestorer(
                repo, workers=self.workers, cancel=cancel, progress=progress
            )
            select: Callable[[str, bool], bool] | None = (
                (lambda path, _is_dir: chosen.matches(path)) if chosen else None
            )
            if options.list_only:
                raise RestoreError("a snapshot is listed with `ls`, not restored with --list")
            assert target is not None
            report = restorer.restore(
                doc.tree,
                target,
                select=select,
                descend=chosen.may_select_below if chosen else None,
                overwrite=options.overwrite,
            )
        except (AgentError, OSError) as exc:
            emit(
                RestoreFailed(
                    backup_id=backup_id,
                    reason=str(exc),
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            )
            if isinstance(exc, OSError):
                raise RestoreError(f"restore failed: {exc}") from exc
            raise
        for path, why in report.errors:
            emit(RestoreSkipped(backup_id=backup_id, path=path, reason=why))
        duration = int((time.monotonic() - started) * 1000)
        result = RestoreResult(
            backup_id=backup_id,
            filename=snapshot_name(backup_id),
            target=target,
            files=report.files,
            dirs=report.dirs,
            links=report.links,
            bytes=report.bytes,
            skipped=list(report.errors),
            archive_size=report.downloaded,
            duration_ms=duration,
            unmatched_patterns=chosen.unused() if chosen else [],
            renamed=list(report.renamed),
            replaced=list(report.replaced),
            unchanged=report.unchanged,
            packs=report.packs,
        )
        emit(
            RestoreFinished(
                backup_id=backup_id,
                filename=result.filename,
                target=options.target_label,
                files=result.restored,
                bytes=result.bytes,
                skipped=len(result.skipped),
                archive_size=result.archive_size,
                sha256="",
                duration_ms=duration,
                resumed=0,
                unchanged=result.unchanged,
                renamed=tuple(result.renamed),
                replaced=tuple(result.replaced),
            )
        )
        return result


def _entry(parts: tuple[bytes, ...], node: Node) -> SnapshotEntry:
    return SnapshotEntry(
        path=display(parts),
        kind=node.type,
        size=node.size,
        mode=node.mode,
        mtime_ns=node.mtime,
        target=(node.target or b"").decode("utf-8", "surrogateescape"),
    )
