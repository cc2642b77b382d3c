"""Two snapshots of one machine at the same time (parallel backups; ``backapp-agent run`` beside the
daemon): they share the repository and its local cache, and neither may spoil what the other
writes. The races are forced into their worst order with hooks on the cache, against the in-memory
server (``repo_fakes``); each snapshot must then restore exactly on a machine with no cache, and a
blob two runs packed at once must survive the loss of either pack."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from desktop_agent.engine._events import Emitter, Event, ScanStarted
from desktop_agent.engine._repo.cache import SCHEMA_VERSION, Cache
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.pack import PackEntry
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.snapshot import SnapshotJob, SnapshotOutcome, take_snapshot
from desktop_agent.engine.repo_protocol import SnapshotStarted, StartSnapshot

from .repo_fakes import FakeRepoServer
from .test_repo_snapshot import KEY, SMALL, restore_all, restored_root, state

WAIT = 30


class HookedCache(Cache):
    """The cache, with a call-back before a pack is recorded and before the unindexed packs are
    listed (the moment a run decides what its index objects hold)."""

    def __init__(
        self,
        path: Path,
        *,
        before_add: Callable[[], None] | None = None,
        before_index: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(path)
        self.before_add = before_add
        self.before_index = before_index

    def add_pack(self, *args: Any, **kwargs: Any) -> None:
        if self.before_add is not None:
            self.before_add()
        super().add_pack(*args, **kwargs)

    def unindexed_packs(self, seqs: Iterable[int]) -> list[str]:
        if self.before_index is not None:
            self.before_index()
        return super().unindexed_packs(seqs)


class HeldStart:
    """The server's plane, but ``snapshot_start`` waits for ``go`` after the server answered."""

    def __init__(self, server: FakeRepoServer, answered: threading.Event, go: threading.Event):
        self._server, self._answered, self._go = server, answered, go

    def snapshot_start(self, request: StartSnapshot) -> SnapshotStarted:
        started = self._server.snapshot_start(request)
        self._answered.set()
        assert self._go.wait(WAIT)
        return started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def make_repo(server: FakeRepoServer, cache: Cache) -> Repository:
    return Repository(keys=RepoKeys.derive(KEY), cache=cache, plane=server, store=server)


def snapshot(
    plane: Any,
    repo: Repository,
    src: Path,
    config: str,
    sink: Callable[[Event], None] | None = None,
) -> SnapshotOutcome:
    return take_snapshot(
        plane,
        lambda started: repo,
        SnapshotJob(config, config, (str(src),)),
        options=SMALL,
        emit=Emitter(sink),
    )


def in_thread(target: Callable[[], SnapshotOutcome]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def files(root: Path, sizes: Sequence[int]) -> Path:
    root.mkdir()
    for n, size in enumerate(sizes):
        (root / f"f{n}.bin").write_bytes(os.urandom(size))
    return root


def assert_restores_on_a_fresh_machine(
    server: FakeRepoServer, tmp_path: Path, runs: dict[Path, SnapshotOutcome]
) -> None:
    fresh = make_repo(server, Cache(tmp_path / "fresh.sqlite3"))
    fresh.open(None, None)
    for src, outcome in runs.items():
        out = tmp_path / f"out-{src.name}"
        report = restore_all(fresh, outcome.backup_id, out)
        assert report.errors == []
        assert state(restored_root(out, src)) == state(src)


def test_a_run_starting_beside_another_keeps_the_packs_the_other_is_uploading(
    tmp_path: Path,
) -> None:
    """B asks the server what is live, A uploads its packs, then B syncs its cache with that
    (older) answer, then A writes its index objects: B must not have forgotten A's packs, or A's
    index leaves them out and A's snapshot cannot be restored without this machine's cache."""
    server = FakeRepoServer()
    a = files(tmp_path / "a", [300_000, 300_000, 5_000])
    b = files(tmp_path / "b", [300_000, 7_000])
    shared = tmp_path / "cache.sqlite3"
    b_answered, go, b_synced = threading.Event(), threading.Event(), threading.Event()

    def b_events(event: Event) -> None:
        if isinstance(event, ScanStarted):  # B has opened the repository and synced its cache
            b_synced.set()

    repo_b = make_repo(server, Cache(shared))
    b_thread, b_out = in_thread(
        lambda: snapshot(HeldStart(server, b_answered, go), repo_b, b, "B", b_events)
    )
    assert b_answered.wait(WAIT)

    def a_indexes() -> None:
        if not go.is_set():
            go.set()
            assert b_synced.wait(WAIT)

    repo_a = make_repo(server, HookedCache(shared, before_index=a_indexes))
    run_a = snapshot(server, repo_a, a, "A")
    b_thread.join(WAIT)
    (run_b,) = b_out
    assert isinstance(run_b, SnapshotOutcome), run_b
    assert run_a.packs >= 3 and b_synced.is_set()
    assert_restores_on_a_fresh_machine(server, tmp_path, {a: run_a, b: run_b})


def test_a_chunk_two_runs_packed_at_once_survives_the_pruning_of_either_pack(
    tmp_path: Path,
) -> None:
    """A and B meet the same new chunk before either has recorded its pack, so both upload it.
    The cache must know both places: when B's snapshot is deleted and its packs pruned, A's
    snapshot still restores from this machine's cache."""
    server = FakeRepoServer()
    payload = os.urandom(300_000)
    a = files(tmp_path / "a", [4_000])
    b = files(tmp_path / "b", [6_000])
    (a / "same.bin").write_bytes(payload)
    (b / "same.bin").write_bytes(payload)
    shared = tmp_path / "cache.sqlite3"
    a_adding, b_done = threading.Event(), threading.Event()

    def a_adds() -> None:
        # A has packed the chunk and uploaded the pack; B runs whole before A records it.
        a_adding.set()
        assert b_done.wait(WAIT)

    repo_a = make_repo(server, HookedCache(shared, before_add=a_adds))
    a_thread, a_out = in_thread(lambda: snapshot(server, repo_a, a, "A"))
    assert a_adding.wait(WAIT)
    run_b = snapshot(server, make_repo(server, Cache(shared)), b, "B")
    b_done.set()
    a_thread.join(WAIT)
    (run_a,) = a_out
    assert isinstance(run_a, SnapshotOutcome), run_a
    assert run_b.new_bytes > len(payload)  # B did upload the chunk too

    # B's snapshot is deleted and the packs only it needed are pruned.
    only_b = set(server.backups[run_b.backup_id]["packs"]) - set(
        server.backups[run_a.backup_id]["packs"]
    )
    assert only_b
    server.deleted.update(only_b)
    for obj in list(server.objects.values()):
        if obj.kind == "data" and obj.seq in only_b:
            server.delete_pack(obj.name)
    local = make_repo(server, Cache(shared))
    snapshot(server, local, files(tmp_path / "c", [1_000]), "C")  # its start forgets them

    out = tmp_path / "out-a"
    report = restore_all(local, run_a.backup_id, out)
    assert report.errors == []
    assert state(restored_root(out, a)) == state(a)


def test_two_runs_at_once_restore_exactly_without_hooks(tmp_path: Path) -> None:
    """The plain case, many times over: runs of two configs overlapping freely, with shared and
    own data, each restoring exactly on a fresh machine."""
    server = FakeRepoServer()
    shared = tmp_path / "cache.sqlite3"
    common = os.urandom(600_000)
    runs: dict[Path, SnapshotOutcome] = {}
    for round_ in range(3):
        sources = []
        for name in ("x", "y"):
            src = tmp_path / f"{name}{round_}"
            files(src, [200_000, 3_000])
            (src / "common.bin").write_bytes(common)
            sources.append(src)
        threads = [
            (
                src,
                *in_thread(
                    lambda s=src: snapshot(server, make_repo(server, Cache(shared)), s, s.name[0])
                ),
            )  # type: ignore[misc]
            for src in sources
        ]
        for src, thread, out in threads:
            thread.join(WAIT * 2)
            (outcome,) = out
            assert isinstance(outcome, SnapshotOutcome), outcome
            runs[src] = outcome
    assert_restores_on_a_fresh_machine(server, tmp_path, runs)


def test_adopting_the_repository_never_wipes_what_another_run_added(tmp_path: Path) -> None:
    first, second = Cache(tmp_path / "c.sqlite3"), Cache(tmp_path / "c.sqlite3")
    assert first.adopt(b"repo-1")
    first.add_pack("a" * 64, 0, 100, [PackEntry(0, b"x" * 32, 0, 10, 10, False)])
    assert not second.adopt(b"repo-1")  # the same repository: kept
    assert second.has_blob(b"x" * 32) == 0
    assert second.adopt(b"repo-2")  # another repository: started afresh
    assert first.has_blob(b"x" * 32) is None


def test_a_version_1_cache_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB);
        CREATE TABLE packs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            seq INTEGER NOT NULL, size INTEGER NOT NULL, indexed INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX packs_seq ON packs (seq);
        CREATE TABLE blobs (id BLOB PRIMARY KEY, type INTEGER NOT NULL,
            pack INTEGER NOT NULL REFERENCES packs (id) ON DELETE CASCADE, offset INTEGER NOT NULL,
            length INTEGER NOT NULL, raw_length INTEGER NOT NULL, compressed INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX blobs_pack ON blobs (pack);
        CREATE TABLE trees (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE snapshots (backup_id TEXT PRIMARY KEY, data BLOB NOT NULL);
        CREATE TABLE indexes (name TEXT PRIMARY KEY);
        INSERT INTO meta VALUES ('schema', '1');
        INSERT INTO packs VALUES (1, 'aa', 7, 100, 1);
        INSERT INTO blobs VALUES (x'01', 0, 1, 0, 10, 10, 0);
        """
    )
    db.commit()
    db.close()
    cache = Cache(path)
    assert cache.meta("schema") == str(SCHEMA_VERSION).encode()
    assert cache.has_blob(b"\x01") == 7
    cache.add_pack("bb", 8, 100, [PackEntry(0, b"\x01", 0, 10, 10, False)])  # a second place
    assert cache.forget_packs_except({8}) == 1
    assert cache.has_blob(b"\x01") == 8
    assert Cache(path).has_blob(b"\x01") == 8  # opening it again changes nothing
