"""How a snapshot restore makes its files: no look for an existing file in a folder the restore
made itself, files created with their final mode where the umask allows it (no ``fchmod``), an
interrupted restore's temporary file taken over, and the ranges with the most blobs (each one a
file to make) read first."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.restore import SnapshotRestorer
from desktop_agent.engine._repo.snapshot import SnapshotJob, take_snapshot
from desktop_agent.engine._repo.write_options import SnapshotOptions
from desktop_agent.engine._transport.retry import RetryPolicy

from .repo_fakes import FakeRepoServer
from .repo_helpers import KEY, restored_root, state

pytestmark = pytest.mark.skipif(os.name != "posix", reason="modes and umask are POSIX")

MiB = 1024 * 1024


def _snapshot(tmp_path: Path, src: Path, pack_size: int = 256 * 1024) -> tuple[Repository, bytes]:
    server = FakeRepoServer()
    r = Repository(
        keys=RepoKeys.derive(KEY),
        cache=Cache(tmp_path / "cache.sqlite3"),
        plane=server,
        store=server,
        retry=RetryPolicy(max_attempts=3),
        sleep=lambda _s: None,
    )
    options = SnapshotOptions(readers=1, sealers=1, uploaders=1, pack_size=pack_size)
    backup = take_snapshot(
        server, lambda _started: r, SnapshotJob("cfg", "Docs", (str(src),)), options=options
    )
    return r, r.snapshot(backup.backup_id).tree


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


MODES = {"rw.txt": 0o644, "private.txt": 0o600, "run.sh": 0o755, "group.txt": 0o640}
# The umask takes bits of the first; the owner may not write the second: both get a fchmod.
CHMODDED = {"shared.txt": 0o666, "readonly.txt": 0o444}


def _tree(src: Path) -> None:
    for i, (name, mode) in enumerate({**MODES, **CHMODDED}.items()):
        folder = src / f"d{i % 2}" / "sub"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(f"{name} {i}\n".encode() * (i + 1))
        (folder / name).chmod(mode)


def test_files_get_their_exact_modes_with_a_fchmod_only_where_the_umask_or_owner_needs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    src = tmp_path / "src"
    _tree(src)
    r, tree = _snapshot(tmp_path, src)
    chmodded: list[int] = []
    real_fchmod = os.fchmod

    def counting_fchmod(fd: int, mode: int) -> None:
        chmodded.append(mode)
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", counting_fchmod)
    out = tmp_path / "out"
    report = SnapshotRestorer(r, workers=2).restore(tree, out)
    monkeypatch.undo()
    assert not report.errors
    assert state(restored_root(out, src)) == state(src)
    assert sorted(chmodded) == sorted(CHMODDED.values())


def test_no_file_is_looked_for_in_a_folder_the_restore_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    src = tmp_path / "src"
    _tree(src)
    r, tree = _snapshot(tmp_path, src)
    out = tmp_path / "out"
    base = restored_root(out, src)
    finals = {str(base / p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    looked: list[str] = []
    real_lstat, real_stat = os.lstat, os.stat

    def lstat(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        looked.append(os.fspath(path))
        return real_lstat(path, *args, **kw)

    def stat(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        looked.append(os.fspath(path) if not isinstance(path, int) else "")
        return real_stat(path, *args, **kw)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "stat", stat)
    report = SnapshotRestorer(r, workers=2).restore(tree, out)
    monkeypatch.undo()
    assert not report.errors and report.files == len(finals)
    assert not finals & set(looked)
    assert state(base) == state(src)

    # Into the folders that now exist, each file is looked at: found with the same content, it
    # is left as it is; a different one gets the restored copy beside it.
    (base / "d0" / "sub" / "rw.txt").write_bytes(b"changed since\n")
    again = SnapshotRestorer(r, workers=2).restore(tree, out)
    assert not again.errors
    assert again.unchanged == len(finals) - 1
    assert [p for p, _ in again.renamed] == [str(src / "d0" / "sub" / "rw.txt").lstrip("/")]
    assert (base / "d0" / "sub" / "rw.txt").read_bytes() == b"changed since\n"


def test_an_interrupted_restores_temporary_file_is_emptied_and_gets_the_mode(
    tmp_path: Path, umask_022: None
) -> None:
    src = tmp_path / "src"
    _tree(src)
    r, tree = _snapshot(tmp_path, src)
    out = tmp_path / "out"
    base = restored_root(out, src)
    folder = base / "d0" / "sub"
    folder.mkdir(parents=True)
    left = folder / ".rw.txt.backapp-part"
    left.write_bytes(b"half of an earlier restore, longer than the file itself " * 10)
    left.chmod(0o600)
    report = SnapshotRestorer(r, workers=2).restore(tree, out)
    assert not report.errors
    assert not left.exists()
    assert state(base) == state(src)


def test_the_ranges_with_the_most_blobs_are_read_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The large file comes first in the snapshot; its packs hold a blob or two each. The pack
    # of small files, each blob a file to create and name, is the longest work: read it first,
    # so that no worker is left alone with it at the end. There are enough small files (each
    # costs about 10 KB of reading) that half of them outweigh the whole large file, however the
    # backup's timing spread them over packs (with or without one of the large file's chunks).
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-large.bin").write_bytes(random.Random(5).randbytes(3 * MiB))
    small = src / "z-small"
    small.mkdir()
    files = 800
    for i in range(files):
        (small / f"{i}.txt").write_text(f"file {i}\n" * (i % 40 + 1))
    r, tree = _snapshot(tmp_path, src, pack_size=1 * MiB)
    read: list[int] = []
    costs: list[int] = []
    real = r.read_spans

    def recording(slot: Any, spans: Any) -> Any:
        read.append(len(spans))
        # The rule: a range costs its bytes, and each of its blobs about as much as 10 KB.
        costs.append(spans[-1][0] + spans[-1][1] - spans[0][0] + 10_000 * len(spans))
        return real(slot, spans)

    monkeypatch.setattr(r, "read_spans", recording)
    out = tmp_path / "out"
    report = SnapshotRestorer(r, workers=1).restore(tree, out)
    assert not report.errors
    assert len(read) >= 3 and sum(read) >= files
    assert costs == sorted(costs, reverse=True), (read, costs)
    # A range of small files (in a pack of their own, or sharing it with the large file's last
    # chunk) comes first, not after the large file as they stand in the snapshot.
    assert read[0] > 10, read
    assert state(restored_root(out, src)) == state(src)
