"""The scanner: walks a config's sources, applies the exclude rules, and writes the list of entries to
archive into a spool (memory up to a few MiB, then a temporary file), so memory stays bounded however
many files there are. The archiver reads that list back; a file that vanishes in between becomes a
per-file error there.

Symlinks are listed as links and never followed (a source folder that is itself a symlink is followed,
since that is what the user pointed at). Sockets, FIFOs and device files are skipped.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, NamedTuple

from ._cancel import CancelToken
from ._errors import SourceError, unreadable_text
from ._excludes import (
    CACHEDIR_SIGNATURE,
    CACHEDIR_TAG,
    IGNORE_FILE,
    RuleSet,
    parse_rules,
    root_rules,
)
from .protocol import FileError

__all__ = [
    "EntryKind",
    "FileStat",
    "ScanEntry",
    "ScanResult",
    "ScanTotals",
    "check_sources",
    "normalize_source",
    "scan",
    "source_problems_text",
]

EntryKind = Literal["d", "f", "l"]
_KINDS: dict[int, EntryKind] = {ord("d"): "d", ord("f"): "f", ord("l"): "l"}
# kind, length of the path, size, mtime in ns, ctime in ns, inode, mode, uid, gid (mode 0: not
# kept); then the path's bytes
_RECORD = struct.Struct("<BIQqqQIII")
_READ_BLOCK = 1024 * 1024


# Whether a scandir entry's stat is the whole ``lstat`` (on Windows it lacks the file id).
_FULL_STAT = os.name != "nt"


class ScanEntry(NamedTuple):
    """One entry to archive: ``kind`` is ``d`` (folder), ``f`` (file) or ``l`` (symlink); ``size``
    and ``mtime_ns`` are what the scan saw (files only), to tell whether a file changed since."""

    kind: EntryKind
    path: str
    size: int = 0
    mtime_ns: int = 0


class FileStat(NamedTuple):
    """What the scan's ``lstat`` of a regular file said, under ``os.stat_result``'s names: a
    snapshot builds the file's entry from it instead of asking the file system a second time."""

    st_mode: int
    st_ino: int
    st_uid: int
    st_gid: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int


BLOCK = 512
SPOOL_MEMORY = 4 * 1024 * 1024


@dataclass(slots=True)
class ScanTotals:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    """Sum of the regular files' sizes."""
    estimated_archive_size: int = 1024
    """The uncompressed tar size the entries would make (headers, padding, end blocks)."""
    skipped: int = 0
    """Sockets, FIFOs and devices, which are not archived."""


def _tar_size(path_len: int, size: int, ascii_name: bool) -> int:
    header = BLOCK if path_len < 100 and ascii_name else 3 * BLOCK
    return header + (size + BLOCK - 1) // BLOCK * BLOCK


@dataclass(slots=True)
class ScanResult:
    """What a scan found: totals, per-file errors, and the entries (read back with ``entries()``)."""

    sources: tuple[str, ...]
    totals: ScanTotals
    errors: list[FileError]
    _spool: IO[bytes] = field(repr=False)

    def entries(self) -> Iterator[ScanEntry]:
        """The entries in archive order (a folder before its contents)."""
        for kind, raw, size, mtime_ns in self.raw_entries():
            yield ScanEntry(kind, os.fsdecode(raw), size, mtime_ns)

    def raw_entries(self) -> Iterator[tuple[EntryKind, bytes, int, int]]:
        """``entries()`` as plain tuples, with each path as the file system's bytes (cheaper: what
        the archiver uses)."""
        self._spool.seek(0)
        read = self._spool.read
        unpack = _RECORD.unpack
        kinds = _KINDS
        while header := read(_RECORD.size):
            kind, length, size, mtime_ns, _, _, _, _, _ = unpack(header)
            yield kinds[kind], read(length), size, mtime_ns

    def stat_entries(self) -> Iterator[tuple[EntryKind, bytes, FileStat | None]]:
        """``raw_entries()`` with the scan's whole ``lstat`` of each regular file (``None`` for
        folders and links, and where the scan could not keep it). The spool is read in large
        blocks: two small reads per entry were a good part of the walk of many small files."""
        self._spool.seek(0)
        read = self._spool.read
        unpack_from = _RECORD.unpack_from
        size_of = _RECORD.size
        kinds = _KINDS
        block = b""
        pos = 0
        while True:
            if len(block) - pos >= size_of:
                kind, length, size, mtime_ns, ctime_ns, ino, mode, uid, gid = unpack_from(
                    block, pos
                )
                start = pos + size_of
                end = start + length
                if end <= len(block):
                    pos = end
                    st = FileStat(mode, ino, uid, gid, size, mtime_ns, ctime_ns) if mode else None
                    yield kinds[kind], block[start:end], st
                    continue
            more = read(_READ_BLOCK)
            if not more:
                return
            block = block[pos:] + more
            pos = 0

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> ScanResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def normalize_source(path: str) -> str:
    """An absolute, normalised path (``~`` expanded, ``..`` resolved, symlinks kept)."""
    return os.path.abspath(os.path.expanduser(path))


def check_sources(paths: Sequence[str]) -> list[FileError]:
    """A ``FileError`` for every source that does not exist or cannot be read, its ``message``
    worded for the person who chose the folder ("Source folder not found")."""
    problems: list[FileError] = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            problems.append(FileError(path, "Source folder not found"))
            continue
        except OSError as exc:
            problems.append(FileError(path, f"Source cannot be read ({exc.strerror or exc})"))
            continue
        if stat.S_ISDIR(st.st_mode) and not os.access(path, os.R_OK | os.X_OK):
            problems.append(FileError(path, "Source folder cannot be read (permission denied)"))
        elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            problems.append(FileError(path, "Source is neither a folder nor a file"))
    return problems


def source_problems_text(problems: Sequence[FileError]) -> str:
    """``Source folder not found: /home/ada/Projects`` (``; ``-joined): why a backup could not
    start, for the person reading the history, the tray or the terminal."""
    return "; ".join(f"{p.message}: {p.path}" for p in problems)


def _is_cache_dir(path: str) -> bool:
    try:
        with open(os.path.join(path, CACHEDIR_TAG), "rb") as fh:
            return fh.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False


def _read_ignore_file(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return fh.read().splitlines()


class _Walker:
    def __init__(
        self,
        spool: IO[bytes],
        *,
        skip: frozenset[str],
        cancel: CancelToken | None,
        progress: Callable[[ScanTotals], None] | None,
    ) -> None:
        self.spool = spool
        self.skip = skip
        self.cancel = cancel
        self.progress = progress
        self.totals = ScanTotals()
        self.errors: list[FileError] = []
        # Records are gathered here and written to the spool in large pieces: one spool write
        # per entry was a tenth of a scan of many small files.
        self._buffer = bytearray()
        self._next_progress = time.monotonic() + 0.25

    def emit(
        self,
        kind: bytes,
        path: str,
        size: int = 0,
        mtime_ns: int = 0,
        st: os.stat_result | None = None,
    ) -> None:
        raw = os.fsencode(path)
        if st is not None and _FULL_STAT:
            record = _RECORD.pack(
                kind[0],
                len(raw),
                size,
                mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                st.st_mode,
                st.st_uid,
                st.st_gid,
            )
        else:
            record = _RECORD.pack(kind[0], len(raw), size, mtime_ns, 0, 0, 0, 0, 0)
        buffer = self._buffer
        buffer += record
        buffer += raw
        if len(buffer) >= 65536:
            self.flush()
        t = self.totals
        t.estimated_archive_size += _tar_size(len(raw), size, raw.isascii())
        if kind == b"f":
            t.files += 1
            t.bytes += size
        elif kind == b"d":
            t.dirs += 1
        else:
            t.symlinks += 1
        if self.progress is not None and (t.files & 255) == 0:
            now = time.monotonic()
            if now >= self._next_progress:
                self._next_progress = now + 0.25
                self.progress(t)

    def flush(self) -> None:
        """Write the gathered records to the spool."""
        self.spool.write(self._buffer)
        self._buffer.clear()

    def walk(self, root: str, rules: RuleSet) -> None:
        try:
            st = os.stat(root)
        except OSError as exc:
            raise SourceError(f"{root}: {exc.strerror or exc}") from exc
        if stat.S_ISREG(st.st_mode):
            self.emit(b"f", root, st.st_size, st.st_mtime_ns)
            return
        # (absolute path, path relative to the root, rules that apply inside)
        stack: list[tuple[str, str, RuleSet]] = [(root, "", rules)]
        while stack:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            path, rel, level_rules = stack.pop()
            try:
                with os.scandir(path) as it:
                    children = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                self.errors.append(FileError(path, "folder vanished during the scan"))
                continue
            except OSError as exc:
                self.errors.append(FileError(path, f"cannot list folder: {exc.strerror or exc}"))
                children = []
            names = {c.name for c in children}
            if rel and CACHEDIR_TAG in names and _is_cache_dir(path):
                continue
            if IGNORE_FILE in names:
                ignore_path = os.path.join(path, IGNORE_FILE)
                try:
                    level_rules = level_rules.with_level(
                        rel, parse_rules(_read_ignore_file(ignore_path))
                    )
                except OSError as exc:
                    self.errors.append(
                        FileError(ignore_path, f"cannot read: {exc.strerror or exc}")
                    )
            self.emit(b"d", path)
            subdirs: list[tuple[str, str, RuleSet]] = []
            for child in children:
                child_rel = f"{rel}/{child.name}" if rel else child.name
                child_path = child.path
                try:
                    is_dir = child.is_dir(follow_symlinks=False)
                    if child_path in self.skip or level_rules.is_excluded(child_rel, is_dir):
                        continue
                    if is_dir:
                        subdirs.append((child_path, child_rel, level_rules))
                    elif child.is_symlink():
                        self.emit(b"l", child_path)
                    else:
                        st = child.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            self.emit(b"f", child_path, st.st_size, st.st_mtime_ns, st)
                        else:
                            self.totals.skipped += 1
                except OSError as exc:
                    text = unreadable_text(exc, "vanished during the scan")
                    self.errors.append(FileError(child_path, text))
            stack.extend(reversed(subdirs))


def scan(
    sources: Sequence[str],
    *,
    excludes: Sequence[str] = (),
    default_excludes: bool = True,
    exclude_node_modules: bool = False,
    skip_paths: Sequence[str | Path] = (),
    temp_dir: Path | None = None,
    cancel: CancelToken | None = None,
    progress: Callable[[ScanTotals], None] | None = None,
) -> ScanResult:
    """Walk ``sources`` (absolute paths) and list what to archive.

    Raises ``SourceError`` if a source cannot be read at all. Per-file problems (a folder that cannot
    be listed, a file that vanished) land in ``ScanResult.errors``. ``skip_paths`` are never entered
    (the agent's own temporary folder). Close the result (or use it as a context manager) to free the
    spool.
    """
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - owned by ScanResult
        max_size=SPOOL_MEMORY, dir=None if temp_dir is None else str(temp_dir), prefix="scan-"
    )
    walker = _Walker(
        spool,
        skip=frozenset(os.path.abspath(p) for p in skip_paths),
        cancel=cancel,
        progress=progress,
    )
    roots = [normalize_source(s) for s in sources]
    try:
        for root in _dedupe_nested(roots):
            rules = root_rules(
                excludes,
                source_root=root,
                default_excludes=default_excludes,
                exclude_node_modules=exclude_node_modules,
            )
            walker.walk(root, rules)
        walker.flush()
        spool.flush()
    except BaseException:
        spool.close()
        raise
    if progress is not None:
        progress(walker.totals)
    return ScanResult(tuple(roots), walker.totals, walker.errors, spool)


def _dedupe_nested(roots: Sequence[str]) -> list[str]:
    """The roots in order, without duplicates and without roots inside another root."""
    kept: list[str] = []
    for root in roots:
        inside_other = any(
            other != root and root.startswith(other.rstrip(os.sep) + os.sep) for other in roots
        )
        if not inside_other and root not in kept:
            kept.append(root)
    return kept
