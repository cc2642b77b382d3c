"""The restore browser's state and words (*Restore Files…*), Qt-free: the tests drive it directly and
``_windows/restore.py`` only shows it.

* ``RestoreSource``: the blocking calls (list the backups, one folder of a snapshot, a search by
  name, a restore) over the engine's ``Snapshots`` and ``Restorer``; the window runs them off the
  GUI thread.
* ``RestoreModel``: what the window shows and what a restore will do: the backups by configuration
  and date, the chosen backup, the chosen paths, keep-both or replace, and the words for progress
  and for the summary (sizes formatted, no exception names).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from desktop_agent.engine import (
    AgentError,
    AgentSettings,
    ApiClient,
    BackupCancelled,
    BackupInfo,
    CancelToken,
    EventSink,
    NotFoundError,
    Recovery,
    RecoveryError,
    RepoKeyStore,
    RepositoryKeyMissing,
    RestoreOptions,
    RestoreProgress,
    Restorer,
    RestoreResult,
    SnapshotEntry,
    Snapshots,
    agent_bandwidth,
    config_dir,
)

from ._text import eta_text, human_bytes, parse_time, rate_text, redact
from ._words import in_words

__all__ = [
    "MAX_SEARCH_RESULTS",
    "BackupChoice",
    "FileRow",
    "RestoreModel",
    "RestoreProblem",
    "RestoreSource",
    "backup_label",
    "in_words",
    "path_pattern",
    "progress_text",
    "summary_text",
]

P = ParamSpec("P")
R = TypeVar("R")

MAX_SEARCH_RESULTS = 500
"""A search stops after this many matches (the window says so)."""

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def backup_label(when: datetime, now: datetime | None = None) -> str:
    """A backup's date as people say it, in local time: ``Today 14:02``, ``Yesterday 09:30``,
    ``Monday 18:00`` (this week), ``3 Nov 14:02`` (this year), ``3 Nov 2025 14:02``.

    >>> now = datetime(2026, 12, 2, 10, 0)
    >>> [backup_label(datetime(2026, 12, d, 14, 2), now) for d in (2, 1)]
    ['Today 14:02', 'Yesterday 14:02']
    >>> backup_label(datetime(2026, 11, 28, 8, 5), now), backup_label(datetime(2025, 3, 1, 8, 5), now)
    ('Saturday 08:05', '1 Mar 2025 08:05')
    """
    local = when.astimezone() if when.tzinfo else when
    today = (now.astimezone() if now and now.tzinfo else now or datetime.now()).date()
    day = local.date()
    clock = f"{local.hour:02d}:{local.minute:02d}"  # not strftime: it costs ~10x (a big folder)
    if day == today:
        return f"Today {clock}"
    if day == today - timedelta(days=1):
        return f"Yesterday {clock}"
    if today - timedelta(days=6) <= day < today:
        return f"{_WEEKDAYS[day.weekday()]} {clock}"
    year = "" if day.year == today.year else f" {day.year}"
    return f"{day.day} {_MONTHS[day.month - 1]}{year} {clock}"


@dataclass(frozen=True, slots=True)
class BackupChoice:
    """One backup in the list."""

    id: str
    config_id: str
    config_name: str
    when: datetime | None
    incremental: bool
    size: int | None
    files: int | None
    agent_id: str | None = None
    """The machine that made it, when it is one this machine replaces (``None``: this one)."""

    def label(self, now: datetime | None = None) -> str:
        """``Today 14:02 · 1.2 GiB · 3,204 files`` (and ``· full`` for an archive)."""
        parts = [backup_label(self.when, now) if self.when else "Unknown date"]
        if self.size is not None:
            parts.append(human_bytes(self.size))
        if self.files is not None:
            parts.append(f"{self.files:,} file{'s' if self.files != 1 else ''}")
        if not self.incremental:
            parts.append("full archive")
        return " · ".join(parts)

    @classmethod
    def of(cls, info: BackupInfo, machine: str | None = None) -> BackupChoice:
        """``machine``: the name of the machine this one replaces that made it."""
        name = info.config_name or "Backup"
        return cls(
            id=info.id,
            config_id=info.config_id,
            config_name=f"{name} (from {machine})" if machine is not None else name,
            agent_id=info.agent_id if machine is not None else None,
            when=parse_time(info.completed_at or info.started_at),
            incremental=info.type == "incremental",
            size=info.size,
            files=info.files_processed,
        )


@dataclass(frozen=True, slots=True)
class FileRow:
    """One entry of a snapshot's folder, as the tree shows it."""

    path: str
    """``/``-separated from the file system's root, without a leading ``/`` (as ``Snapshots``)."""
    name: str
    is_dir: bool
    size: str
    modified: str

    @classmethod
    def of(cls, entry: SnapshotEntry, now: datetime | None = None) -> FileRow:
        when = datetime.fromtimestamp(entry.mtime_ns / 1e9)  # local time, as shown
        return cls(
            path=entry.path,
            name=entry.path.rsplit("/", 1)[-1],
            is_dir=entry.kind == "dir",
            size="" if entry.kind == "dir" else human_bytes(entry.size),
            modified=backup_label(when, now),
        )


def path_pattern(path: str) -> str:
    """The ``--path`` pattern that selects exactly ``path`` (a file, or a folder and all below it):
    anchored at the root, the glob characters in a name escaped.

    >>> path_pattern("home/me/report [final].pdf"), path_pattern("home")
    ('/home/me/report \\\\[final\\\\].pdf', '/home/**')
    """
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in path.strip("/"))
    if "/" not in escaped:
        # One name alone would match at any depth; a snapshot's top level holds folders only
        # (``home``, ``Users``), so "everything below it" is what choosing one means.
        return f"/{escaped}/**"
    return "/" + escaped


def progress_text(event: RestoreProgress) -> str:
    """``12 files · 3.4 MiB of 10.0 MiB · 1.2 MiB/s · about 5s left``."""
    done = f"{human_bytes(event.bytes_written)}"
    if event.size:
        done += f" of {human_bytes(event.size)}"
    left = "" if event.eta is None else f" · about {eta_text(event.eta)} left"
    files = f"{event.files:,} file{'s' if event.files != 1 else ''}"
    return f"{files} · {done} · {rate_text(event.rate)}{left}"


def summary_text(result: RestoreResult) -> str:
    """What a finished restore did, for people: where the files went, every file kept beside an
    existing one, every file replaced, and what could not be restored."""
    in_place = str(result.target) == "/"
    where = "their original location" if in_place else str(result.target)

    def shown(path: str) -> str:
        return "/" + path if in_place else path

    lines = [
        f"Restored {result.files:,} file{'s' if result.files != 1 else ''} "
        f"({human_bytes(result.bytes)}) to {where}."
    ]
    if result.unchanged:
        lines.append(
            f"{result.unchanged:,} already there with the same content: left as they were."
        )
    if result.renamed:
        lines.append(
            f"{len(result.renamed):,} existing file(s) differ and were kept; "
            "the restored copy is beside each:"
        )
        lines += [f"  {shown(path)}  →  {name}" for path, name in result.renamed]
    if result.replaced:
        lines.append(f"{len(result.replaced):,} existing file(s) replaced:")
        lines += [f"  {shown(path)}" for path in result.replaced]
    if result.skipped:
        lines.append(f"{len(result.skipped):,} could not be restored:")
        lines += [f"  {shown(path)}: {redact(reason)}" for path, reason in result.skipped]
    return "\n".join(lines)


class RestoreProblem(Exception):
    """A ``RestoreSource`` call failed; ``str()`` says why in words for the window."""


def code_problem(exc: BaseException) -> str:
    """Why the recovery code is asked for, in words."""
    text = str(exc)
    if text.startswith("wrong recovery code"):
        return "Wrong recovery code. Nothing was written."
    if text.startswith("not a valid recovery code"):
        return text[:1].upper() + text[1:] + ". Nothing was written."
    if isinstance(exc, RepositoryKeyMissing):
        return (
            "This backup's key is not on this computer (it was made by another computer, or "
            "this computer's keychain lost it). Type your account's recovery code to open it."
        )
    return redact(text)


def _in_words(
    method: Callable[Concatenate[RestoreSource, P], R],
) -> Callable[Concatenate[RestoreSource, P], R]:
    """Turn what a ``RestoreSource`` call raises into a ``RestoreProblem`` in words (a cancel
    passes through)."""

    @functools.wraps(method)
    def wrapper(source: RestoreSource, /, *args: P.args, **kwargs: P.kwargs) -> R:
        source.code_problem = None
        try:
            return method(source, *args, **kwargs)
        except BackupCancelled:
            raise
        except (RepositoryKeyMissing, RecoveryError) as exc:
            # Before anything was written: the window asks for the recovery code and retries.
            source.code_problem = code_problem(exc)
            raise RestoreProblem(source.code_problem) from exc
        except (AgentError, OSError) as exc:
            raise RestoreProblem(in_words(exc, source.settings.server_url or "")) from exc

    return wrapper


class RestoreSource:
    """The blocking calls of the restore browser, with the pairing's settings and API key. Each
    opens its own connections, so several may run on pool threads at once."""

    def __init__(self, settings: AgentSettings, api_key: str) -> None:
        self.settings = settings
        self.api_key = api_key
        # Browsing keeps one repository open (its key checked, its cache warm): opening a folder
        # is then one listing read from the local cache, not a heartbeat and a repository opened
        # again. One call at a time uses it; a restore opens its own.
        self._browse: Snapshots | None = None
        self._browse_lock = threading.Lock()
        self.recovery_code: str | None = None
        self.code_problem: str | None = None
        """Set when the last call failed for want of a repository key (or with a wrong code):
        why, in words; the window then asks for the recovery code."""

    def close(self) -> None:
        """Close the browsing connection (a later call opens it again)."""
        with self._browse_lock:
            if self._browse is not None:
                self._browse.close()
                self._browse = None

    @contextmanager
    def _snapshots(self) -> Iterator[Snapshots]:
        with self._browse_lock:
            if self._browse is None:
                self._browse = Snapshots.from_settings(
                    self.settings, self.api_key, recovery_code=self.recovery_code
                )
            try:
                yield self._browse
            except AgentError:
                self._browse.close()  # a fresh start next time (the server may have come back)
                self._browse = None
                raise

    def set_recovery_code(self, code: str | None) -> None:
        """The account's recovery code, for the snapshots whose key this machine does not hold
        (an old machine's, or its own after the keychain lost it); ``None`` forgets it."""
        self.recovery_code = code
        self.code_problem = None
        self.close()  # the browsing connection opens again with (or without) the code

    @_in_words
    def backups(self) -> list[BackupChoice]:
        """The completed backups of this machine's configurations, then those of the machines
        it replaces (the owner's mark), newest first."""
        assert self.settings.server_url
        with ApiClient(self.settings.server_url, self.api_key) as client:
            found = [BackupChoice.of(b) for b in client.list_backups(limit=1000)]
            try:
                old = client.inherited_agents()
            except NotFoundError:  # a server too old to say
                old = []
            for agent in old:
                found += [
                    BackupChoice.of(b, agent.name)
                    for b in client.list_backups(limit=1000, agent_id=agent.agent_id)
                ]
            return found

    @_in_words
    def folder(self, backup_id: str, path: str = "", agent_id: str | None = None) -> list[FileRow]:
        """One folder of a snapshot, folders first, then by name."""
        with self._snapshots() as snaps:
            now = datetime.now()  # once: a folder may hold tens of thousands of entries
            entries = snaps.entries(backup_id, path, recursive=False, agent_id=agent_id)
            rows = [FileRow.of(e, now) for e in entries]
        return sorted(rows, key=lambda r: (not r.is_dir, r.name.lower()))

    @_in_words
    def search(
        self,
        backup_id: str,
        text: str,
        wanted: Callable[[], bool] = lambda: True,
        agent_id: str | None = None,
    ) -> list[FileRow]:
        """Paths of a snapshot whose name holds ``text`` (any case), at most
        ``MAX_SEARCH_RESULTS``. The walk stops early once ``wanted()`` is false (the user typed
        on), so a search of a huge snapshot does not hold up the next one."""
        needle = text.strip().lower()
        with self._snapshots() as snaps:
            entries = snaps.entries(backup_id, agent_id=agent_id)
            return list(_first(_matching(entries, needle, wanted), MAX_SEARCH_RESULTS))

    @_in_words
    def restore(
        self,
        choice: BackupChoice,
        options: RestoreOptions,
        events: EventSink,
        cancel: CancelToken,
    ) -> RestoreResult:
        """Restore ``choice`` (a snapshot: only the packs the chosen paths need; an archive: read
        whole) with ``options``."""
        if choice.incremental:
            with Snapshots.from_settings(
                self.settings, self.api_key, recovery_code=self.recovery_code
            ) as snaps:
                return snaps.restore(
                    choice.id, options, events=events, cancel=cancel, agent_id=choice.agent_id
                )
        assert self.settings.server_url
        with (
            ApiClient(self.settings.server_url, self.api_key) as client,
            Restorer(
                client,
                events=events,
                temp_dir=self.settings.temp_dir,
                download_limit=agent_bandwidth(self.settings).download,
                # An encrypted archive of this machine opens with its own key.
                identities=lambda _ticket: Recovery(
                    client, RepoKeyStore(config_dir()), server_url=self.settings.server_url or ""
                ).archive_identities(None),
            ) as restorer,
        ):
            return restorer.restore(choice.id, options, cancel=cancel)


def _matching(
    entries: Iterable[SnapshotEntry], needle: str, wanted: Callable[[], bool]
) -> Iterator[FileRow]:
    now = datetime.now()
    for n, entry in enumerate(entries):
        if n % 1000 == 0 and not wanted():
            return
        if needle in entry.path.rsplit("/", 1)[-1].lower():
            yield FileRow.of(entry, now)


def _first(rows: Iterator[FileRow], n: int) -> Iterator[FileRow]:
    for i, row in enumerate(rows):
        if i >= n:
            return
        yield row


@dataclass(slots=True)
class RestoreModel:
    """The restore browser's state: the backups, the chosen one, the chosen paths, the conflict
    rule. ``now`` is injectable for tests."""

    backups: list[BackupChoice] = field(default_factory=list)
    chosen: BackupChoice | None = None
    selected: set[str] = field(default_factory=set)
    replace: bool = False
    """Replace existing files that differ (a deliberate choice); keep both by default."""
    now: Callable[[], datetime] = datetime.now

    def set_backups(self, backups: Iterable[BackupChoice]) -> None:
        """The list, newest first within each configuration."""
        far = datetime.min.replace(tzinfo=UTC)
        self.backups = sorted(backups, key=lambda b: b.when or far, reverse=True)
        if self.chosen is not None and self.chosen.id not in {b.id for b in self.backups}:
            self.choose(None)

    def grouped(self) -> list[tuple[str, list[BackupChoice]]]:
        """``(configuration name, its backups newest first)``, configurations by name."""
        groups: dict[str, list[BackupChoice]] = {}
        for b in self.backups:
            groups.setdefault(b.config_name, []).append(b)
        return sorted(groups.items(), key=lambda item: item[0].lower())

    def choose(self, backup: BackupChoice | None) -> None:
        """Choose a backup (the selection starts empty)."""
        self.chosen = backup
        self.selected = set()

    def note(self) -> str:
        """What the user should know about the chosen backup before restoring it."""
        b = self.chosen
        if b is None:
            return "Choose a backup on the left."
        if b.incremental:
            return (
                "Open folders to see their files, or search by name. Choose files or folders, "
                "then where to restore them. Only the data they need is downloaded."
            )
        size = f" ({human_bytes(b.size)})" if b.size is not None else ""
        return (
            f"This is a full backup: the whole archive{size} must be read to restore anything "
            "from it, so it restores as a whole."
        )

    def can_restore(self) -> bool:
        b = self.chosen
        return b is not None and (not b.incremental or bool(self.selected))

    def options(self, target: Path | None) -> RestoreOptions:
        """The restore to run: into ``target``, or to the original location when ``None``."""
        b = self.chosen
        assert b is not None
        patterns = tuple(path_pattern(p) for p in sorted(self.selected)) if b.incremental else ()
        if target is None:
            return RestoreOptions(in_place=True, overwrite=self.replace, patterns=patterns)
        return RestoreOptions(
            target=Path(os.path.abspath(target)), overwrite=self.replace, patterns=patterns
        )

    def selection_text(self) -> str:
        if self.chosen is None:
            return ""
        if not self.chosen.incremental:
            return "Everything in this backup will be restored."
        n = len(self.selected)
        if n == 0:
            return "Nothing chosen yet."
        return f"{n:,} item{'s' if n != 1 else ''} chosen."
