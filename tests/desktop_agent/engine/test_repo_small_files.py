"""Small files in a snapshot: each is stat'ed once (by the scan), and a file that changes after
the scan is still backed up as it is read, or named when it changes while it is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desktop_agent.engine import _scanner as scanner_module
from desktop_agent.engine._repo import backup as backup_module
from desktop_agent.engine._repo import walk as walk_module
from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.snapshot import SnapshotJob, SnapshotOutcome, take_snapshot

from .repo_fakes import FakeRepoServer
from .repo_helpers import KEY, SMALL, restore_all, restored_root, state


def _repo(server: FakeRepoServer, tmp_path: Path, cache: str = "cache") -> Repository:
    return Repository(
        keys=RepoKeys.derive(KEY),
        cache=Cache(tmp_path / f"{cache}.sqlite3"),
        plane=server,
        store=server,
    )


def _snap(r: Repository, src: Path) -> SnapshotOutcome:
    return take_snapshot(
        r.plane, lambda started: r, SnapshotJob("cfg", "Docs", (str(src),)), options=SMALL
    )


def _tree(src: Path) -> None:
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(30):
            (src / f"d{d}" / f"f{i}").write_bytes(b"%d-%d\n" % (d, i))
    (src / "big.bin").write_bytes(os.urandom(700_000))  # more than one chunk's minimum


def test_files_are_stat_ed_once_and_unchanged_ones_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _tree(src)
    server = FakeRepoServer()
    r = _repo(server, tmp_path)
    seen: list[str] = []
    real_lstat = os.lstat

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(os.fsdecode(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", counting)
    first = _snap(r, src)
    assert first.errors == () and first.files == 91
    # The walk takes each file's metadata from the scan: no file is stat'ed by path again.
    assert [p for p in seen if os.path.isfile(p)] == []
    second = _snap(r, src)
    assert second.bytes_read == 0 and second.errors == ()
    out = tmp_path / "out"
    assert restore_all(r, second.backup_id, out).errors == []
    assert state(restored_root(out, src)) == state(src)


def test_a_file_changed_after_the_scan_is_stored_as_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _tree(src)
    target = src / "d1" / "f7"
    real = backup_module.read_whole

    def edit_first(chunker, fs_path: str, size_hint: int):  # type: ignore[no-untyped-def]
        if fs_path == str(target) and target.read_bytes() == b"1-7\n":
            target.write_bytes(b"edited after the scan\n")
            os.utime(target, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
        return real(chunker, fs_path, size_hint)

    monkeypatch.setattr(backup_module, "read_whole", edit_first)
    server = FakeRepoServer()
    first = _snap(_repo(server, tmp_path), src)
    # Changed before it was read, not while: no error, and the snapshot holds the new content
    # with the new metadata (size and mtime agree with it).
    assert first.errors == ()
    assert first.bytes == first.bytes_read - len(b"edited after the scan\n") + len(b"1-7\n")
    out = tmp_path / "out"
    other = _repo(server, tmp_path, cache="other")
    other.open(None, None)
    assert restore_all(other, first.backup_id, out).errors == []
    assert state(restored_root(out, src)) == state(src)


def test_a_file_that_changes_while_it_is_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _tree(src)
    target = src / "d2" / "f3"
    real_open = walk_module.open_noatime
    writes = [0]

    def busy(path: str) -> int:
        fd = real_open(path)
        if path == str(target):  # a log that is written to every time it is opened
            writes[0] += 1
            with open(target, "ab") as fh:
                fh.write(b"another line\n")
            os.utime(target, ns=(writes[0] * 10**18, writes[0] * 10**18))
        return fd

    monkeypatch.setattr(walk_module, "open_noatime", busy)
    monkeypatch.setattr(backup_module, "open_noatime", busy)
    server = FakeRepoServer()
    first = _snap(_repo(server, tmp_path), src)
    assert [(e.path, e.message) for e in first.errors] == [
        (str(target), "changed while it was read; the backup holds the content as read")
    ]
    assert writes[0] == 2  # read once with the scan's metadata, once more with the new one
    out = tmp_path / "out"
    other = _repo(server, tmp_path, cache="other")
    other.open(None, None)
    assert restore_all(other, first.backup_id, out).errors == []
    restored = restored_root(out, src)
    assert (restored / "d2" / "f3").read_bytes() == target.read_bytes()  # as read the last time
    target.unlink()
    (restored / "d2" / "f3").unlink()
    assert state(restored) == state(src)


def test_the_scan_gives_back_each_file_s_stat_across_read_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scanner_module, "_READ_BLOCK", 7)  # records cut at every place
    src = tmp_path / "src"
    _tree(src)
    os.symlink("d0/f1", src / "link")
    with scanner_module.scan([str(src)]) as found:
        plain = list(found.raw_entries())
        with_stat = list(found.stat_entries())
    assert [(k, raw) for k, raw, _, _ in plain] == [(k, raw) for k, raw, _ in with_stat]
    for kind, raw, st in with_stat:
        if kind != "f":
            assert st is None
            continue
        assert st is not None
        real = os.lstat(raw)
        assert (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (
            real.st_mode,
            real.st_ino,
            real.st_size,
            real.st_mtime_ns,
            real.st_ctime_ns,
        )
        assert (st.st_uid, st.st_gid) == (real.st_uid, real.st_gid)
