"""``Snapshots``: reading this machine's snapshots — list them, browse one, restore all or part of
one — for the command line and the tray app. Backing up is ``BackupEngine``'s job.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ... import __version__
from .._cancel import CancelToken
from .._closing import OwnsClients
from .._errors import (
    AgentError,
    ConfigurationError,
    KeyStoreError,
    RepositoryKeyMissing,
    RestoreError,
    os_error_text,
)
from .._events import (
    Emitter,
    EventSink,
    RestoreFailed,
    RestoreProgress,
    RestoreSkipped,
    RestoreStarted,
)
from .._recovery.account import Recovery, RecoveryPlane
from .._restore.planning import PathFilter, RestoreOptions
from .._restore.restorer import RestoreResult
from .._settings import AgentSettings, config_dir, default_cache_dir
from ..protocol import BackupInfo
from ..repo_protocol import (
    CompleteSnapshot,
    ListedObject,
    ObjectKind,
    ObjectStore,
    ObjectUpload,
    ReadSlot,
    RepoPlane,
    RepositoryKeySource,
    SnapshotStarted,
    StartSnapshot,
)
from .cache import Cache, cache_path, snapshot_name
from .crypto import RepoKeys
from .format import Node
from .keys import RepoKeyStore
from .repository import Repository
from .restore import RestoreReport, SnapshotRestorer, display, lookup, walk


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


class Snapshots(OwnsClients):
    """This agent's snapshots, and those of the agents it inherits (the owner's mark). ``client``
    is the agent API (``ApiClient``), ``store`` the pre-signed storage (``HttpStorage``); a
    repository's key comes from ``key_source`` (default: this machine's keychain, ``RepoKeyStore``),
    never from the server in the clear."""

    def __init__(
        self,
        client: Any,
        store: ObjectStore,
        *,
        server_url: str,
        keys: RepoKeyStore | None = None,
        key_source: RepositoryKeySource | None = None,
        cache_dir: Path | None = None,
        workers: int = 4,
        recovery_code: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.server_url = server_url
        self.keys = keys or RepoKeyStore(config_dir())
        self.key_source: RepositoryKeySource = key_source or self.machine_key
        self.cache_dir = cache_dir or default_cache_dir()
        self.workers = workers
        self.recovery_code = recovery_code
        """Used only when this machine holds no key: the key is then unwrapped with it (and put
        back in the keychain) from the server's wrapped copy."""
        self._repos: dict[str, Repository] = {}
        self._agent_id: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: AgentSettings,
        api_key: str,
        *,
        key_source: RepositoryKeySource | None = None,
        recovery_code: str | None = None,
    ) -> Snapshots:
        from .._transport.connect import connect

        client, storage = connect(settings, api_key)
        return cls(
            client,
            storage,
            server_url=settings.server_url or "",
            key_source=key_source,
            recovery_code=recovery_code,
        ).owning(client, storage)

    def machine_key(self, agent_id: str) -> bytes | None:
        """The default ``RepositoryKeySource``: the key this machine's keychain holds for
        ``agent_id``'s repository (its own; another agent's only if it was copied here)."""
        try:
            return self.keys.load(f"{self.server_url}#{agent_id}")
        except KeyStoreError as exc:
            raise RestoreError(str(exc)) from exc

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()
        super().close()

    # --- the repository --------------------------------------------------------------------------

    def own_agent_id(self) -> str:
        """This agent's id, as the server says (asked once)."""
        if self._agent_id is None:
            beat = self.client.heartbeat(version=__version__, platform=sys.platform)
            if beat.agent is None:
                raise ConfigurationError("the server did not say which agent this is")
            self._agent_id = str(beat.agent.id)
        return self._agent_id

    def repository(self, agent_id: str | None = None) -> Repository:
        """The repository of ``agent_id`` (this agent's when ``None``; another only when this
        one inherits it), opened with the key ``key_source`` gives (checked against the
        repository's config). ``RepositoryKeyMissing`` when there is none: nothing is read or
        written before that."""
        own = self.own_agent_id()
        agent_id = agent_id or own
        if agent_id in self._repos:
            return self._repos[agent_id]
        key = self.key_source(agent_id)
        if key is None and self.recovery_code is not None:
            # Unwrapped from the server's wrapped copy (this agent's, or, through the owner's
            # mark, the one it inherits); this agent's own goes back in the keychain.
            key = Recovery(
                cast(RecoveryPlane, self.client),
                self.keys,
                server_url=self.server_url,
                agent_id=own,
            ).recover_key(self.recovery_code, agent_id)
        if key is None:
            if agent_id == own:
                raise RepositoryKeyMissing(
                    agent_id,
                    "this machine holds no key for its snapshots (it never made one, or the "
                    "keychain entry was lost): restore with --recovery-code-stdin and the "
                    "account's recovery code",
                )
            raise RepositoryKeyMissing(agent_id)
        plane = self.client if agent_id == own else self.reader_plane(agent_id)
        repo = Repository(
            keys=RepoKeys.derive(key),
            cache=Cache(cache_path(self.cache_dir, agent_id)),
            plane=cast(RepoPlane, plane),
            store=self.store,
            workers=self.workers,
        )
        try:
            repo.open(None, None)
        except BaseException:
            repo.close()
            raise
        self._repos[agent_id] = repo
        return repo

    def reader_plane(self, agent_id: str) -> Any:
        """The snapshot endpoints as they serve another agent's repository (read only)."""
        return InheritedPlane(self.client, agent_id)

    # --- listing ---------------------------------------------------------------------------------

    def list(
        self, *, config_id: str | None = None, limit: int = 100, agent_id: str | None = None
    ) -> list[BackupInfo]:
        """The completed snapshots of this agent's configs, newest first; with ``agent_id``,
        those an agent this one inherits made."""
        found: list[BackupInfo] = (
            self.client.list_backups(config_id=config_id, limit=1000, agent_id=agent_id)
            if agent_id
            else self.client.list_backups(config_id=config_id, limit=1000)
        )
        return [b for b in found if b.type == "incremental"][:limit]

    def entries(
        self,
        backup_id: str,
        path: str = "",
        *,
        recursive: bool = True,
        agent_id: str | None = None,
    ) -> Iterator[SnapshotEntry]:
        """Every path of a snapshot below ``path`` (all of it when empty), folders first; with
        ``recursive=False`` only the folder's own entries (one listing read: a browser that
        opens folders as they are expanded). ``agent_id``: the agent whose repository holds it
        (an inherited one's; this agent's when ``None``)."""
        repo = self.repository(agent_id)
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
        agent_id: str | None = None,
    ) -> RestoreResult:
        """Restore a snapshot, or the paths ``options.patterns`` select, into ``options.target``
        (or in place). Only the packs (or ranges of packs) holding the wanted files are
        downloaded; every chunk is checked against its id. Existing files are never silently
        replaced: one with other content gets the restored copy beside it, unless
        ``options.overwrite``. Per-file problems are in ``skipped``; ``RestoreError`` when the
        snapshot itself cannot be read, ``RepositoryKeyMissing`` (before anything is written)
        when this machine has no key for the repository of ``agent_id`` (the agent that made
        the snapshot: one this agent inherits; this agent when ``None``)."""
        emit = Emitter(events)
        started = time.monotonic()
        options.check()
        target = Path("/") if options.in_place else options.target
        try:
            repo = self.repository(agent_id)
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
                    reason=os_error_text(exc) if isinstance(exc, OSError) else str(exc),
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            )
            if isinstance(exc, OSError):
                raise RestoreError(f"restore failed: {os_error_text(exc)}") from exc
            raise
        for path, why in report.errors:
            emit(RestoreSkipped(backup_id=backup_id, path=path, reason=why))
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
            duration_ms=int((time.monotonic() - started) * 1000),
            unmatched_patterns=chosen.unused() if chosen else [],
            renamed=list(report.renamed),
            replaced=list(report.replaced),
            unchanged=report.unchanged,
            packs=report.packs,
        )
        emit(result.finished(options.target_label))
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


class InheritedPlane:
    """The snapshot endpoints as they serve another agent's repository, one this agent inherits
    (the owner's mark) or, with ``organisation``, one an administrator reads with the
    organisation code: reads name ``agentId``; writing is not possible (the server would refuse
    it anyway: every upload goes to the caller's own repository)."""

    def __init__(self, client: Any, agent_id: str, *, organisation: bool = False) -> None:
        self.client = client
        self.agent_id = agent_id
        # An administrator's organisation recovery reads through its own endpoints.
        self.how: dict[str, Any] = {"organisation": True} if organisation else {}

    def repo_read(self, objects: Sequence[tuple[ObjectKind, str]]) -> list[ReadSlot]:
        slots: list[ReadSlot] = self.client.repo_read(objects, agent_id=self.agent_id, **self.how)
        return slots

    def repo_list(
        self, kind: ObjectKind, *, after: str | None = None
    ) -> tuple[list[ListedObject], str | None]:
        page: tuple[list[ListedObject], str | None] = self.client.repo_list(
            kind, after=after, agent_id=self.agent_id, **self.how
        )
        return page

    def _read_only(self) -> RestoreError:
        return RestoreError("another machine's repository is read-only here")

    def snapshot_start(self, request: StartSnapshot) -> SnapshotStarted:
        raise self._read_only()

    def snapshot_objects(self, backup_id: str, objects: Sequence[ObjectUpload]) -> list[Any]:
        raise self._read_only()

    def snapshot_complete(self, request: CompleteSnapshot) -> str:
        raise self._read_only()

    def snapshot_abort(self, backup_id: str, reason: str, *, cancelled: bool = False) -> None:
        raise self._read_only()
