"""``backapp-agent check``'s checker and the restore drill against the in-memory server
(``repo_fakes``): a clean repository passes; a flipped byte is found only by reading the data; a
pack gone from storage behind the server's back is found from its header probe; a drill restores
and verifies a sample, and fails naming the pack when one is gone; reports stay within the
server's limits. The end-to-end tests run the same code against the real server and S3."""

from __future__ import annotations

import os
import random
from pathlib import Path

from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.crypto import RepoKeys
from desktop_agent.engine._repo.drill import run_drill
from desktop_agent.engine._repo.repository import Repository
from desktop_agent.engine._repo.restore import lookup
from desktop_agent.engine._repo.snapshot import SnapshotJob, take_snapshot
from desktop_agent.engine._repo.verify import (
    MAX_PROBLEMS,
    ConfigCheck,
    Problem,
    RepoChecker,
    Target,
)
from desktop_agent.engine._repo.write_options import SnapshotOptions

from .repo_fakes import FakeRepoServer

KEY = bytes(range(32))
SMALL = SnapshotOptions(readers=2, sealers=2, uploaders=2, pack_size=256 * 1024)


def _setup(tmp_path: Path) -> tuple[FakeRepoServer, Repository, Path, str]:
    server = FakeRepoServer()
    r = Repository(
        keys=RepoKeys.derive(KEY),
        cache=Cache(tmp_path / "cache.sqlite3"),
        plane=server,
        store=server,
    )
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n" * 100)
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (src / "empty").write_bytes(b"")
    done = take_snapshot(
        server, lambda started: r, SnapshotJob("cfg", "Docs", (str(src),)), options=SMALL
    )
    return server, r, src, done.backup_id


def _pack_of(r: Repository, backup_id: str, path: Path) -> str:
    node = lookup(r, r.snapshot(backup_id).tree, str(path))
    assert node is not None and node.content
    return r.cache.locate([node.content[0]])[node.content[0]].pack


def test_a_clean_repository_passes_and_every_pack_is_read(tmp_path: Path) -> None:
    server, r, _src, backup_id = _setup(tmp_path)
    [result] = RepoChecker(r, rng=random.Random(1)).run([Target("cfg", "Docs", backup_id)], 100)
    assert result.ok, result.problems
    assert result.packs >= 2 and result.packs_read == result.packs
    assert result.trees >= 2 and result.blobs == 2  # two files of one chunk each
    # Structure only: no pack is downloaded whole, only their tails.
    server.gets.clear()
    [result] = RepoChecker(r).run([Target("cfg", "Docs", backup_id)], 0)
    assert result.ok and result.packs_read == 0
    assert all(start is not None for _, start, _ in server.gets)


def test_a_flipped_byte_is_found_by_reading_the_data(tmp_path: Path) -> None:
    server, r, src, backup_id = _setup(tmp_path)
    pack = _pack_of(r, backup_id, src / "sub" / "b.bin")
    data = bytearray(server.blobs[f"data/{pack}"])
    data[len(data) // 2] ^= 0x01
    server.blobs[f"data/{pack}"] = bytes(data)
    target = Target("cfg", "Docs", backup_id)
    [structure] = RepoChecker(r).run([target], 0)
    assert structure.ok  # the header at the tail is intact: only the data tells
    [result] = RepoChecker(r).run([target], 100)
    kinds = {p.kind for p in result.problems}
    assert kinds == {"damaged_pack", "damaged_blob"}, result.problems
    assert any(p.name == pack for p in result.problems)
    blob = next(p for p in result.problems if p.kind == "damaged_blob")
    assert blob.paths == (str(src / "sub" / "b.bin").lstrip("/"),)
    sent = result.to_json()
    assert all("paths" not in p for p in sent["problems"])  # paths stay on this machine


def test_a_pack_gone_behind_the_servers_back_is_found_without_reading_data(
    tmp_path: Path,
) -> None:
    server, r, src, backup_id = _setup(tmp_path)
    pack = _pack_of(r, backup_id, src / "a.txt")
    server.delete_pack(pack)
    [result] = RepoChecker(r).run([Target("cfg", "Docs", backup_id)], 0)
    assert [(p.kind, p.name) for p in result.problems] == [("missing_pack", pack)]
    assert str(src / "a.txt").lstrip("/") in result.problems[0].paths


def test_a_drill_restores_verifies_and_cleans_up_or_names_the_lost_pack(tmp_path: Path) -> None:
    server, r, src, backup_id = _setup(tmp_path)
    temp = tmp_path / "temp"
    drill = run_drill(
        r, config_id="cfg", config_name="Docs", backup_id=backup_id, sample=5, temp_root=temp
    )
    assert drill.ok, drill.problems
    assert drill.sample == 3 and drill.files == 3  # every file there is (the empty one last)
    assert drill.bytes == 300_000 + 600 and drill.snapshot_bytes == drill.bytes
    assert drill.first_byte_ms is not None and drill.projected_seconds is not None
    assert list(temp.iterdir()) == []
    assert r.store is server  # the timing wrapper is gone again

    server.delete_pack(_pack_of(r, backup_id, src / "sub" / "b.bin"))
    failed = run_drill(
        r, config_id="cfg", config_name="Docs", backup_id=backup_id, sample=5, temp_root=temp
    )
    assert not failed.ok and failed.files < failed.sample
    assert failed.error is not None and "missing" in failed.error
    assert {p.kind for p in failed.problems} == {"restore_failed"}
    assert list(temp.iterdir()) == []


def test_reports_stay_within_the_servers_limits() -> None:
    long = Problem("unreadable", "ab" * 32, "x" * 5000)
    assert len(long.to_json()["message"]) == 1000
    many = ConfigCheck("c", "Docs", "b", problems=[long] * (MAX_PROBLEMS + 5))
    assert len(many.to_json()["problems"]) == MAX_PROBLEMS
