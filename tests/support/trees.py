"""Awkward source trees and a file-by-file comparison of a tree with its extracted copy."""

from __future__ import annotations

import os
import random
import stat
import sys
import zlib
from pathlib import Path

MTIME = 1_500_000_000  # 2017-07-14, a fixed mtime the round trip must keep
MIB = 1024 * 1024

# name -> content
AWKWARD_FILES: dict[str, bytes] = {
    "plain.txt": b"hello\n",
    "with space.txt": b"spaces in the name",
    "\u00fcn\u00efc\u00f6d\u00e9 \u65e5\u672c\u8a9e \U0001f600.txt": b"Unicode name",
    "new\nline.txt": b"a newline in the name",
    "tab\tand 'quotes\" and \\backslash.txt": b"odd characters",
    "empty.txt": b"",
    "sub dir/nested/deep.txt": b"deep " * 1000,
    "long/" + "x" * 150 + "/" + "y" * 120 + ".txt": b"a path longer than 255 bytes",
    "-leading-dash.txt": b"dash",
}


def build_awkward_tree(root: Path, *, big: int = 3 * MIB) -> Path:
    """A tree with every case the issue names; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in AWKWARD_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    rng = random.Random(7)
    half = big // 2
    (root / "big.bin").write_bytes(rng.randbytes(half) + b"compressible " * ((big - half) // 13))
    (root / "empty dir").mkdir()
    (root / "private.txt").write_bytes(b"secret")
    (root / "private.txt").chmod(0o600)
    (root / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "script.sh").chmod(0o755)
    (root / "locked dir").mkdir()
    (root / "locked dir" / "inside.txt").write_bytes(b"inside")
    os.symlink("plain.txt", root / "link-to-file")
    os.symlink("sub dir", root / "link-to-dir")  # must be archived as a link, not followed
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("/etc/hostname", root / "absolute-link")
    os.link(root / "plain.txt", root / "hardlink-to-plain")
    if sys.platform.startswith("linux"):
        (root / os.fsdecode(b"latin1-\xe9.txt")).write_bytes(b"not UTF-8")
    # mtimes last, folders after their contents
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            entry = os.path.join(dirpath, name)
            os.utime(
                entry, (MTIME, MTIME + zlib.crc32(os.fsencode(name)) % 1000), follow_symlinks=False
            )
        os.utime(dirpath, (MTIME, MTIME + 42))
    (root / "locked dir").chmod(0o700)
    return root


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """relative path -> (type, mode, mtime, content or link target), symlinks not followed."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                with open(path, "rb") as fh:
                    content = fh.read()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), int(st.st_mtime), content)
    return out


def extracted_root(dest: Path, source: Path) -> Path:
    """Where ``source`` lands when its archive is extracted into ``dest`` (names keep the path)."""
    return dest / str(source).lstrip("/")


def random_file(path: Path, size: int, seed: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, MIB)
            fh.write(rng.randbytes(n))
            left -= n


def random_tree(root: Path, size: int) -> Path:
    """A folder with one incompressible file of ``size`` bytes (fixed seed) and a short note."""
    root.mkdir(parents=True)
    (root / "random.bin").write_bytes(random.Random(1).randbytes(size))
    (root / "note.txt").write_text("hello")
    return root
