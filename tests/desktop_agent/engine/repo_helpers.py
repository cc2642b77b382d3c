"""Helpers the snapshot engine's unit tests share: a fixed key, small packs, restoring a whole
snapshot and comparing trees."""

from __future__ import annotations

import os
from pathlib import Path

from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.restore import SnapshotRestorer
from desktop_agent.engine._repo.write_options import SnapshotOptions

KEY = bytes(range(32))


SMALL = SnapshotOptions(readers=2, sealers=2, uploaders=2, pack_size=256 * 1024)


def state(root: Path) -> dict[str, tuple]:
    """Everything a restore must reproduce: kinds, contents, modes, mtimes, link targets."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mode & 0o7777, st.st_mtime_ns)
    return out


def restore_all(r: Repository, backup_id: str, out: Path, **kw):  # type: ignore[no-untyped-def]
    doc = r.snapshot(backup_id)
    return SnapshotRestorer(r, workers=3).restore(doc.tree, out, **kw)


def restored_root(out: Path, src: Path) -> Path:
    return out / str(src).lstrip("/")
