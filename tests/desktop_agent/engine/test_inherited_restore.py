"""Restoring a snapshot another machine made (one this agent inherits) with ``Snapshots``, against
the in-memory server of ``repo_fakes``: the repository key comes from the pluggable key source;
without one the restore stops with the recovery-code message before anything is read or written;
with one, every read names the old agent and the files come back exactly."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from desktop_agent.engine import RepositoryKeyMissing, RestoreOptions, Snapshots
from desktop_agent.engine._repo.access import InheritedPlane
from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.run import cache_path
from desktop_agent.engine._repo.snapshot import SnapshotJob, take_snapshot
from desktop_agent.engine._repo.write_options import SnapshotOptions
from desktop_agent.engine.repo_protocol import ListedObject, ObjectKind, ReadSlot

from .repo_fakes import FakeRepoServer
from .repo_helpers import state

NEW, OLD = "agent-new", "agent-old"
KEY = bytes(range(32))


def make_tree(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "naïve café.txt").write_text("unicode\n")
    (root / "big.bin").write_bytes(os.urandom(700_000))
    (root / "empty-dir").mkdir()
    os.symlink("docs/a.txt", root / "link-to-a")
    (root / "script.sh").write_text("#!/bin/sh\n")
    (root / "script.sh").chmod(0o750)


class Client:
    """The agent API as the new agent sees it: the server holds only the old agent's
    repository, so every read must name it."""

    def __init__(self, server: FakeRepoServer) -> None:
        self.server = server
        self.reads: list[str | None] = []

    def heartbeat(self, *, version: str, platform: str) -> Any:
        return SimpleNamespace(agent=SimpleNamespace(id=NEW))

    def repo_read(
        self, objects: Sequence[tuple[ObjectKind, str]], *, agent_id: str | None = None
    ) -> list[ReadSlot]:
        self.reads.append(agent_id)
        return self.server.repo_read(objects) if agent_id == OLD else []

    def repo_list(
        self, kind: ObjectKind, *, after: str | None = None, agent_id: str | None = None
    ) -> tuple[list[ListedObject], str | None]:
        self.reads.append(agent_id)
        return self.server.repo_list(kind, after=after) if agent_id == OLD else ([], None)


def _old_snapshot(tmp_path: Path, server: FakeRepoServer) -> tuple[Path, str]:
    """The old machine's snapshot of a small tree, made with ``KEY``."""
    src = tmp_path / "src"
    make_tree(src)
    repo = Repository(
        keys=RepoKeys.derive(KEY),
        cache=Cache(tmp_path / "old-machine.sqlite3"),
        plane=server,
        store=server,
    )
    outcome = take_snapshot(
        server,
        lambda started: repo,
        SnapshotJob("cfg", "Docs", (str(src),)),
        options=SnapshotOptions(readers=2, sealers=2, uploaders=2, pack_size=256 * 1024),
    )
    repo.close()
    return src, outcome.backup_id


def test_without_a_key_it_stops_before_reading_or_writing(tmp_path: Path) -> None:
    server = FakeRepoServer()
    _, backup_id = _old_snapshot(tmp_path, server)
    client = Client(server)
    gets = len(server.gets)
    asked: list[str] = []

    def no_key(agent_id: str) -> bytes | None:
        asked.append(agent_id)
        return None

    cache = tmp_path / "new-cache"
    snaps = Snapshots(client, server, server_url="https://s", key_source=no_key, cache_dir=cache)
    out = tmp_path / "out"
    with pytest.raises(RepositoryKeyMissing) as caught:
        snaps.restore(backup_id, RestoreOptions(target=out), agent_id=OLD)
    assert caught.value.agent_id == OLD and asked == [OLD]
    assert str(caught.value) == (
        "This backup was made by another machine; its key can be recovered with your recovery "
        "code: --recovery-code-stdin"
    )
    assert not out.exists() and not cache_path(cache, OLD).exists()
    assert client.reads == [] and len(server.gets) == gets
    # Its own repository without a key says so in its own words.
    with pytest.raises(RepositoryKeyMissing, match="this machine holds no key for its snapshots"):
        snaps.restore(backup_id, RestoreOptions(target=out))
    assert not out.exists()


def test_with_the_key_from_the_source_it_restores_exactly(tmp_path: Path) -> None:
    server = FakeRepoServer()
    src, backup_id = _old_snapshot(tmp_path, server)
    client = Client(server)
    keys = {OLD: KEY}
    with Snapshots(
        client, server, server_url="https://s", key_source=keys.get, cache_dir=tmp_path / "c"
    ) as snaps:
        out = tmp_path / "out"
        result = snaps.restore(backup_id, RestoreOptions(target=out), agent_id=OLD)
        listed = [e.path for e in snaps.entries(backup_id, agent_id=OLD)]
    assert result.skipped == []
    assert state(out / str(src).lstrip("/")) == state(src)
    assert any(p.endswith("docs/a.txt") for p in listed)
    assert client.reads and set(client.reads) == {OLD}


def test_an_inherited_repository_is_read_only() -> None:
    plane = InheritedPlane(object(), OLD)
    with pytest.raises(Exception, match="read-only"):
        plane.snapshot_abort("x", "no")
