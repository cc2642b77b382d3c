"""The snapshot engine against an in-memory server (``repo_fakes``): what a snapshot holds, what a
later one reads and uploads, resuming, concurrency, damaged repositories and restore rules. The
end-to-end tests run the same code against the real server and S3."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from desktop_agent.engine._cancel import CancelToken
from desktop_agent.engine._errors import BackupCancelled
from desktop_agent.engine._repo import backup as backup_module
from desktop_agent.engine._repo import pack as pack_module
from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.errors import WrongKey
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.restore import SnapshotRestorer, lookup, walk
from desktop_agent.engine._repo.snapshot import SnapshotJob, take_snapshot

from .repo_fakes import FakeRepoServer
from .repo_helpers import KEY, SMALL, restore_all, restored_root, state


def make_tree(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "naïve café ü.txt").write_text("unicode\n")
    (root / "docs" / "back\\slash and spaces  .txt").write_text("odd\n")
    (root / "docs" / "-dash").write_text("dash\n")
    (root / "big.bin").write_bytes(os.urandom(1_500_000))
    (root / "text.log").write_bytes(b"a line of a log file\n" * 60_000)
    (root / "empty-file").write_bytes(b"")
    (root / "empty-dir").mkdir()
    (root / "deep" / "er" / "est").mkdir(parents=True)
    (root / "deep" / "er" / "est" / "leaf").write_text("leaf")
    os.symlink("docs/a.txt", root / "link-to-a")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "script.sh").write_text("#!/bin/sh\n")
    (root / "script.sh").chmod(0o750)
    os.utime(root / "docs" / "a.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (root / "raw-name-\udcff").write_bytes(b"not utf-8 name")


@pytest.fixture
def server() -> FakeRepoServer:
    return FakeRepoServer()


def repo(
    server: FakeRepoServer, tmp_path: Path, cache: str = "cache", key: bytes = KEY
) -> Repository:
    return Repository(
        keys=RepoKeys.derive(key),
        cache=Cache(tmp_path / f"{cache}.sqlite3"),
        plane=server,
        store=server,
    )


def snap(r: Repository, src: Path, config: str = "cfg", **kw):  # type: ignore[no-untyped-def]
    return take_snapshot(
        r.plane, lambda started: r, SnapshotJob(config, "Docs", (str(src),)), options=SMALL, **kw
    )


def test_snapshots_restore_exactly_and_later_ones_read_only_changes(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    r = repo(server, tmp_path)
    first = snap(r, src)
    assert first.errors == ()
    assert first.bytes_read == first.bytes  # everything read once
    before = state(src)

    (src / "docs" / "a.txt").write_text("alpha, edited\n")
    (src / "new.txt").write_bytes(os.urandom(50_000))
    (src / "deep" / "er" / "est" / "leaf").unlink()
    second = snap(r, src)
    assert second.parent_id == first.backup_id
    assert second.bytes_read == len("alpha, edited\n") + 50_000  # only what changed was read
    assert second.new_bytes < 80_000  # and roughly only that was uploaded
    after = state(src)

    third = snap(r, src)
    # Nothing read, no data uploaded; at most the folder listings of the folders above the source
    # (their mtimes move when other programs write beside them).
    assert third.bytes_read == 0
    assert third.new_blobs <= len(src.parts) and third.new_bytes < 4096

    # Each snapshot restores on its own to the tree as it was, even on another machine's cache.
    other = repo(server, tmp_path, cache="other")
    other.open(None, None)
    for backup, expected in ((first, before), (second, after), (third, after)):
        out = tmp_path / f"out-{backup.backup_id}"
        report = restore_all(other, backup.backup_id, out)
        assert report.errors == []
        assert state(restored_root(out, src)) == expected


def test_tiny_files_are_split_into_packs_at_the_blob_limit(
    tmp_path: Path, server: FakeRepoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack_module, "MAX_PACK_BLOBS", 40)
    src = tmp_path / "src"
    for d in range(5):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(50):
            (src / f"d{d}" / f"f{i}").write_bytes(b"%d-%d\n" % (d, i))
    r = repo(server, tmp_path)
    first = snap(r, src)
    # 250 file blobs and a few trees, at most 40 blobs a pack: no pack is over the limit.
    assert first.packs >= 7
    other = repo(server, tmp_path, cache="other")
    other.open(None, None)
    out = tmp_path / "out"
    assert restore_all(other, first.backup_id, out).errors == []
    assert state(restored_root(out, src)) == state(src)


def test_a_small_file_that_vanishes_is_named_and_the_rest_is_kept(
    tmp_path: Path, server: FakeRepoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(b"same\n" if i % 2 else b"%d\n" % i)
    real = backup_module.read_whole

    def flaky(chunker, fs_path: str, size_hint: int):  # type: ignore[no-untyped-def]
        if fs_path.endswith("f3"):
            raise FileNotFoundError(2, "No such file or directory")
        return real(chunker, fs_path, size_hint)

    monkeypatch.setattr(backup_module, "read_whole", flaky)
    first = snap(repo(server, tmp_path), src)
    assert [(e.path.rsplit("/", 1)[-1], e.message) for e in first.errors] == [
        ("f3", "vanished before it could be read")
    ]
    out = tmp_path / "out"
    other = repo(server, tmp_path, cache="other")
    other.open(None, None)
    assert restore_all(other, first.backup_id, out).errors == []
    (src / "f3").unlink()
    assert state(restored_root(out, src)) == state(src)


def test_nothing_readable_is_stored(tmp_path: Path, server: FakeRepoServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    canary = b"CANARY-" + os.urandom(8).hex().encode()
    (src / "canary-secret-name.txt").write_bytes(canary * 100)
    snap(repo(server, tmp_path), src)
    for key, data in server.blobs.items():
        for needle in (canary, b"canary-secret-name", str(src).encode(), b"Docs"):
            assert needle not in data, (key, needle)
            assert needle.decode() not in key


def test_two_configs_share_the_repository_and_deduplicate(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    payload = os.urandom(2_000_000)
    (a / "same.bin").write_bytes(payload)
    (b / "copy.bin").write_bytes(payload)
    r = repo(server, tmp_path)
    first = snap(r, a, config="A")
    second = snap(r, b, config="B")
    assert first.new_bytes > 2_000_000
    assert second.new_bytes < 10_000  # only its trees
    assert second.parent_id is None  # parents are per config


def test_concurrent_runs_of_two_configs(tmp_path: Path, server: FakeRepoServer) -> None:
    trees = []
    for name in ("one", "two"):
        src = tmp_path / name
        make_tree(src)
        (src / "shared.bin").write_bytes(b"S" * 700_000)
        trees.append(src)
    results: dict[str, object] = {}

    def run(src: Path) -> None:
        # Each run has its own Repository object and connection, as two processes would.
        results[src.name] = snap(repo(server, tmp_path), src, config=src.name)

    threads = [threading.Thread(target=run, args=(t,)) for t in trees]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = repo(server, tmp_path)
    for src in trees:
        out = tmp_path / f"out-{src.name}"
        report = restore_all(r, results[src.name].backup_id, out)  # type: ignore[attr-defined]
        assert report.errors == []
        assert state(restored_root(out, src)) == state(src)


def test_a_killed_run_is_resumed_without_uploading_its_packs_again(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(os.urandom(300_000))
    (src / "f5.bin").chmod(0o000)  # read last... and unreadable: the run is stopped before it
    cancel = CancelToken()
    r = repo(server, tmp_path)
    uploaded: list[str] = []
    original = server.put_object

    def put(url, body, headers):  # type: ignore[no-untyped-def]
        ok = original(url, body, headers)
        if url.startswith("put://data/"):
            uploaded.append(url)
            if len(uploaded) == 3:
                cancel.cancel()  # the machine goes down after three packs
        return ok

    server.put_object = put  # type: ignore[method-assign]
    with pytest.raises(BackupCancelled):
        snap(r, src, cancel=cancel)
    assert list(server.backups.values())[0]["status"] == "cancelled"
    done = set(uploaded)
    assert len(done) >= 3
    uploaded.clear()
    (src / "f5.bin").chmod(0o644)
    result = snap(repo(server, tmp_path), src)
    assert result.parent_id is None  # the cancelled one is not a parent: it never completed
    assert not done & set(uploaded)  # nothing uploaded twice
    out = tmp_path / "out"
    assert restore_all(r, result.backup_id, out).errors == []
    assert state(restored_root(out, src)) == state(src)


def test_missing_packs_are_reported_by_name_and_the_rest_restores(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("kept")
    r = repo(server, tmp_path)
    snap(r, src)
    (src / "lost.bin").write_bytes(os.urandom(400_000))  # in a pack of its own, from this run
    backup = snap(r, src)
    doc = r.snapshot(backup.backup_id)
    lost_node = lookup(r, doc.tree, str(src / "lost.bin"))
    assert lost_node is not None
    lost_pack = r.cache.locate([lost_node.content[0]])[lost_node.content[0]].pack
    keep_node = lookup(r, doc.tree, str(src / "keep.txt"))
    assert keep_node is not None
    assert r.cache.locate([keep_node.content[0]])[keep_node.content[0]].pack != lost_pack
    server.delete_pack(lost_pack)
    out = tmp_path / "out"
    report = restore_all(r, backup.backup_id, out)
    base = restored_root(out, src)
    assert (base / "keep.txt").read_text() == "kept"
    assert not (base / "lost.bin").exists()
    assert [p for p, _ in report.errors] == [str(src / "lost.bin").lstrip("/")]
    assert lost_pack[:16] in report.errors[0][1] and "missing" in report.errors[0][1]
    assert not list(base.glob(".*backapp-part"))  # no half-written file left


def test_commit_with_a_lost_pack_writes_the_snapshot_again(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(300_000))
    r = repo(server, tmp_path)
    snap(r, src)
    # The pack disappears from storage but the server and the cache still believe in it.
    name = next(k for k in server.blobs if k.startswith("data/")).removeprefix("data/")
    server.delete_pack(name)
    (src / "b.txt").write_text("new")
    again = snap(r, src)
    out = tmp_path / "out"
    assert restore_all(r, again.backup_id, out).errors == []
    assert state(restored_root(out, src)) == state(src)


def test_a_file_whose_chunks_were_pruned_is_read_again(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(300_000))
    r = repo(server, tmp_path)
    snap(r, src)
    # The server pruned the pack: the next start lists it as not live.
    server.deleted.update(o.seq for o in server.objects.values() if o.kind == "data")
    again = snap(r, src)
    assert again.bytes_read == 300_000
    out = tmp_path / "out"
    assert restore_all(r, again.backup_id, out).errors == []


def test_a_cancelled_snapshot_is_aborted(tmp_path: Path, server: FakeRepoServer) -> None:
    src = tmp_path / "src"
    make_tree(src)
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(BackupCancelled):
        snap(repo(server, tmp_path), src, cancel=cancel)
    (status,) = [b["status"] for b in server.backups.values()]
    assert status == "cancelled"


def test_another_key_is_refused_before_anything_is_written(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    snap(repo(server, tmp_path), src)
    puts = len(server.puts)
    with pytest.raises(WrongKey):
        snap(repo(server, tmp_path, cache="c2", key=bytes(32)), src)
    assert len(server.puts) == puts
    assert [b["status"] for b in server.backups.values()] == ["completed", "failed"]


def test_restore_keeps_both_replaces_on_request_and_skips_identical(
    tmp_path: Path, server: FakeRepoServer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("from the backup")
    (src / "b.txt").write_text("same")
    r = repo(server, tmp_path)
    backup = snap(r, src)
    out = tmp_path / "out"
    base = restored_root(out, src)
    base.mkdir(parents=True)
    (base / "a.txt").write_text("edited locally")
    (base / "b.txt").write_text("same")
    report = restore_all(r, backup.backup_id, out)
    assert (base / "a.txt").read_text() == "edited locally"  # never silently replaced
    (kept,) = report.renamed
    assert kept[0].endswith("a.txt") and kept[1].startswith("a (restored ")
    assert (base / kept[1]).read_text() == "from the backup"
    assert report.unchanged == 1
    report = restore_all(r, backup.backup_id, out, overwrite=True)
    assert (base / "a.txt").read_text() == "from the backup"
    assert [p.endswith("a.txt") for p in report.replaced] == [True]


def test_listing_and_selecting_paths(tmp_path: Path, server: FakeRepoServer) -> None:
    src = tmp_path / "src"
    make_tree(src)
    r = repo(server, tmp_path)
    backup = snap(r, src)
    doc = r.snapshot(backup.backup_id)
    names = {
        "/".join(p.decode("utf-8", "surrogateescape") for p in parts)
        for parts, _ in walk(r, doc.tree)
    }
    rel = str(src).lstrip("/")
    assert f"{rel}/docs/naïve café ü.txt" in names and f"{rel}/empty-dir" in names
    out = tmp_path / "out"
    server.gets.clear()
    report = SnapshotRestorer(r).restore(
        doc.tree, out, select=lambda path, is_dir: path == f"{rel}/docs/a.txt"
    )
    assert report.files == 1 and report.errors == []
    assert (restored_root(out, src) / "docs" / "a.txt").read_text() == "alpha\n"
    assert not (restored_root(out, src) / "big.bin").exists()
    # Only the bytes of that one chunk were fetched, not its whole pack.
    fetched = sum((end - start + 1) for _, start, end in server.gets if start is not None)
    assert fetched < 1000
