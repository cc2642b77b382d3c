"""Files only the server's own user may read: the database, the secret, the backups.

Folders the server creates are ``0700`` and files ``0600`` whatever the process's umask; a folder
that already exists keeps the mode its owner gave it (e.g. a container's volume).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "make_private_dir", "touch_private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parent, each ``0700`` (an existing one is left alone)."""
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it first
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask; 0700 is what we mean


def touch_private_file(path: Path) -> None:
    """Create ``path`` empty with mode ``0600`` unless it exists (e.g. before SQLite opens it, so
    the database and its journals, which SQLite gives the database's mode, are never readable by
    others)."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
