"""The files of a snapshot restore: each written under a temporary name beside its place, with
its mode and times, then moved there (see ``restore``)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .format import Node

log = logging.getLogger("desktop_agent.engine.repo")

TEMP_SUFFIX = ".backapp-part"
# A file's mode and times are set through its descriptor where the platform allows it (no path
# lookups): after the last chunk, before it is closed and moved to its place.
META_BY_FD = hasattr(os, "fchmod") and os.utime in os.supports_fd


def read_umask() -> int | None:
    """The process's umask where the system tells it without changing it (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


class FileJob:
    """One file being restored: where it goes, its temporary name, the chunks still to come."""

    __slots__ = (
        "final",
        "temp",
        "node",
        "remaining",
        "failed",
        "lock",
        "display",
        "created",
        "fd",
        "moded",
    )

    def __init__(self, final: str, node: Node, shown: str) -> None:
        self.final = final
        folder, name = os.path.split(final)
        self.temp = os.path.join(folder, f".{name}{TEMP_SUFFIX}")
        self.node = node
        self.remaining = len(node.content)
        self.failed: str | None = None
        self.lock = threading.Lock()
        self.display = shown
        self.created = False
        """Whether the temporary file exists: made by the first chunk written (on a download
        worker, so that creating thousands of files overlaps with the downloads)."""
        self.fd: int | None = None
        """The temporary file, kept open between its chunks (see ``restore._OPEN_FILES``)."""
        self.moded = False
        """Whether the temporary file was created with its final mode (no ``fchmod`` needed)."""


def open_temp(job: FileJob, umask: int | None = None) -> int:
    """Create (or empty) the job's temporary file; a link in its place is refused
    (``O_NOFOLLOW``). Returns the open descriptor. Not sized first: the chunks, written at their
    offsets, make it whole (an ``ftruncate`` per file cost a sixth of a restore's file work).

    With the process's ``umask`` known, a new file whose mode the umask leaves whole (and that its
    owner may write, so that it can be opened again) is created with that mode, and needs no
    ``fchmod`` later: one system call less per file, each of which gives up and takes back the
    GIL (what a restore of many small files waits on). Any other file is created private (0600)
    and gets its mode when it is complete."""
    mode = job.node.mode or 0o644
    if umask is not None and mode & ~0o777 == 0 and mode & umask == 0 and mode & 0o600 == 0o600:
        try:
            fd = os.open(job.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            pass  # left by an interrupted restore: emptied below, its mode set at the end
        else:
            job.moded = True
            return fd
    return os.open(
        job.temp,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
        0o600,
    )


def apply_meta(path: str | Path, node: Node, *, follow: bool) -> None:
    """Set ``node``'s mode and mtime on ``path`` (a failure is logged, not raised)."""
    try:
        if node.type != "symlink":
            os.chmod(path, node.mode or 0o644)
        if node.type != "symlink" or os.utime in os.supports_follow_symlinks:
            os.utime(
                path, ns=(node.mtime, node.mtime), follow_symlinks=follow and node.type != "symlink"
            )
    except OSError as exc:
        log.debug("could not set the metadata of %s: %s", path, exc)


def apply_meta_fd(fd: int, node: Node, *, chmod: bool = True) -> None:
    """``apply_meta`` through an open descriptor; ``chmod`` false when the mode is right already."""
    try:
        if chmod:
            os.fchmod(fd, node.mode or 0o644)
        os.utime(fd, ns=(node.mtime, node.mtime))
    except OSError as exc:
        log.debug("could not set the metadata of a restored file: %s", exc)
