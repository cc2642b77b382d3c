"""The file-system side of writing a snapshot: tree paths of directories, nodes from ``stat``, the
test that lets an unchanged file go unread, and the bookkeeping of the walk (one frame per open
directory, files reused from the parent, a bound on bytes in flight)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from .chunker import Chunker
from .format import CHUNK_MIN, Node

__all__ = [
    "Budget",
    "Frame",
    "Reused",
    "StatLike",
    "fs_path_of",
    "node_from_stat",
    "open_noatime",
    "path_parts",
    "read_whole",
    "unchanged",
]


class Budget:
    """A counting limit on bytes in flight; ``acquire`` blocks while over it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, alive: Callable[[], bool]) -> None:
        with self._cond:
            while self._used > 0 and self._used + n > self._limit:
                if not alive():
                    return
                self._cond.wait(0.5)
            self._used += n

    def release(self, n: int) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()


class Frame:
    """One open directory of the walk."""

    __slots__ = ("parts", "fs_path", "meta", "parent_nodes", "children", "node")

    def __init__(
        self,
        parts: tuple[bytes, ...],
        fs_path: str | None,
        meta: Node | None,
        parent_nodes: dict[bytes, Node] | None,
    ) -> None:
        self.parts = parts
        self.fs_path = fs_path
        self.meta = meta
        self.parent_nodes = parent_nodes
        self.children: list[Node | Future[list[Node | None]] | Frame | Reused] = []
        self.node: Node | None = None


@dataclass(slots=True)
class Reused:
    """A file taken over from the parent snapshot, pending the check that its chunks still exist."""

    node: Node
    fs_path: str


class StatLike(Protocol):
    """What a node is built from: an ``os.stat_result``, or the scan's ``FileStat``."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...


def path_parts(raw: bytes) -> tuple[bytes, ...]:
    """The tree path of an absolute file-system path: the components below the root, as bytes
    (``C:\\Users\\me`` on Windows gives ``C``, ``Users``, ``me``, as in a full archive)."""
    if os.sep != "/":
        text = os.fsdecode(raw)
        drive, rest = os.path.splitdrive(text)
        raw = os.fsencode(drive.rstrip(":") + "/" + rest.replace(os.sep, "/"))
    return tuple(p for p in raw.split(b"/") if p)


def fs_path_of(parts: tuple[bytes, ...]) -> str:
    if os.sep != "/" and parts:
        return os.fsdecode(parts[0]) + ":\\" + "\\".join(os.fsdecode(p) for p in parts[1:])
    return "/" + "/".join(os.fsdecode(p) for p in parts)


def node_from_stat(name: bytes, st: StatLike, kind: str) -> Node:
    return Node(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        mtime=st.st_mtime_ns,
        ctime=st.st_ctime_ns,
        inode=st.st_ino,
        uid=getattr(st, "st_uid", 0),
        gid=getattr(st, "st_gid", 0),
        size=st.st_size if kind == "file" else 0,
    )


def unchanged(parent: Node | None, st: StatLike) -> bool:
    """Whether a file is taken to be the same as in the parent snapshot without reading it."""
    return (
        parent is not None
        and parent.type == "file"
        and parent.size == st.st_size
        and parent.mtime == st.st_mtime_ns
        and parent.ctime == st.st_ctime_ns
        and parent.inode == st.st_ino
    )


def open_noatime(path: str) -> int:
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(path, flags | noatime)
        except PermissionError:
            pass  # O_NOATIME is only allowed on one's own files
    return os.open(path, flags)


def read_whole(
    chunker: Chunker, fs_path: str, size_hint: int
) -> tuple[list[bytes], os.stat_result]:
    """A (small) file's chunks, all in memory, and its ``fstat`` after reading. Raises ``OSError``.

    A file of at most one chunk is read with one ``read`` of the size it had (plus one byte, to
    see it grew): on a tree of tiny files the file object and the chunker's generator were a
    good part of each file's time. A short read is the end of the file; should it not be, the
    size in the ``fstat`` after it tells the caller."""
    fd = open_noatime(fs_path)
    try:
        if size_hint < CHUNK_MIN:
            data = os.read(fd, size_hint + 1)
            if len(data) <= size_hint:
                return ([data] if data else []), os.fstat(fd)
            os.lseek(fd, 0, os.SEEK_SET)  # it grew: cut it as a large file
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
            chunks = list(chunker.chunks(fh, size_hint))
        return chunks, os.fstat(fd)
    finally:
        os.close(fd)
