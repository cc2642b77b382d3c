"""End to end: backups in parallel (``parallelBackups``) with a real ``backapp serve``, a real S3
endpoint on loopback (moto) and the real ``backapp-agent``: the daemon backs up two configs at the
same time (their runs overlap on the server's clock), while ``backapp-agent run`` backs up a third
in another process on the same repository and cache; the three share a file (deduplicated across
the runs). Every snapshot restores exactly, also with an empty cache (from the repository's own
index objects), and ``check --read-data 100`` reads every pack back and finds nothing wrong.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.agent_process import Agent, Daemon, events_of, setup
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import MIB, extracted_root, random_file, snapshot

pytestmark = [pytest.mark.e2e]


def _tree(root: Path, seed: int, shared: bytes) -> Path:
    for n in range(3):
        random_file(root / f"own-{n}.bin", 3 * MIB + n * 1000, seed=seed * 10 + n)
    (root / "notes" / "readme.txt").parent.mkdir(parents=True)
    (root / "notes" / "readme.txt").write_text(f"tree {seed}\n" * 500)
    (root / "shared.bin").write_bytes(shared)
    return root


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_two_configs_back_up_at_once_beside_a_cli_run_and_all_restore_exactly(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    random_file(tmp_path / "shared-source.bin", 2 * MIB, seed=99)
    shared_file = (tmp_path / "shared-source.bin").read_bytes()
    trees = {name: _tree(tmp_path / name, n, shared_file) for n, name in enumerate("abc")}
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_POLL_INTERVAL": "30"}
    )
    every_minute = {"type": "incremental", "schedule": {"cron": "* * * * *"}}
    owner, _agent_id, key, cfgs = setup(
        server,
        {"name": "Alpha", "sources": [{"path": str(trees["a"])}], "options": every_minute},
        {"name": "Beta", "sources": [{"path": str(trees["b"])}], "options": every_minute},
        {
            "name": "Gamma",
            "sources": [{"path": str(trees["c"])}],
            "options": {"type": "incremental"},
        },
    )
    alpha, beta, gamma = cfgs
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))

    # The setting: refused in words outside 1-4, nothing saved; then two at once.
    for bad in ("0", "5", "many"):
        refused = agent.run("configure", "--parallel-backups", bad, "--api-key-stdin", stdin="\n")
        assert refused.returncode == 2, refused.stderr
        assert "between 1 and 4" in refused.stderr or "not a whole number" in refused.stderr
    saved = json.loads((tmp_path / "agent-config" / "config.json").read_text())
    assert "parallelBackups" not in saved
    done = agent.run("configure", "--parallel-backups", "2", "--api-key-stdin", stdin="\n")
    assert done.returncode == 0, done.stderr
    assert "up to 2 configs backed up at the same time" in done.stdout

    # Both schedules have been known for two minutes: both are due at the daemon's first tick.
    since = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"configs": {c["id"]: {"cron": "* * * * *", "since": since} for c in (alpha, beta)}}
    (tmp_path / "agent-config" / "schedule.json").write_text(json.dumps(record))

    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("parallel backups 2")
        daemon.wait_for_line("backing up now: ")
        # Another process on the same repository and cache, at the same time.
        beside = agent.run("run", "--config", gamma["id"], "--json")
        assert beside.returncode == 0, beside.stderr + beside.stdout
        deadline = datetime.now(UTC) + timedelta(seconds=240)
        while True:
            done_ids = {b["configId"] for b in owner.backups() if b["status"] == "completed"}
            if {alpha["id"], beta["id"]} <= done_ids:
                break
            assert daemon.process.poll() is None, daemon.output()
            assert datetime.now(UTC) < deadline, daemon.output()
            time.sleep(0.5)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert "backing up now: Alpha, Beta" in daemon.output() or (
        "backing up now: Beta, Alpha" in daemon.output()
    )

    first: dict[str, dict[str, object]] = {}
    for backup in sorted(owner.backups(), key=lambda b: str(b["startedAt"])):
        if backup["status"] == "completed":
            first.setdefault(str(backup["configId"]), backup)
    a, b, c = (first[cfg["id"]] for cfg in cfgs)
    assert [x["type"] for x in (a, b, c)] == ["incremental"] * 3
    # The daemon's two runs overlapped in time (the server's clock).
    assert _time(str(a["startedAt"])) < _time(str(b["completedAt"]))
    assert _time(str(b["startedAt"])) < _time(str(a["completedAt"]))
    # The shared file was uploaded at most by the runs that met it at the same moment (all three
    # at worst): never more than each tree's content once, plus the format's own bytes (headers,
    # authentication tags, folder listings, index: a few kB a run; 64 KiB allowed).
    total_new = sum(int(str(x["newBytes"])) for x in (a, b, c))
    content = sum(f.stat().st_size for t in trees.values() for f in t.rglob("*") if f.is_file())
    assert total_new < content + 3 * 64 * 1024
    [finished] = [e for e in events_of(beside.stdout) if e["event"] == "backup_finished"]
    assert finished["logId"] == c["id"]

    # Every snapshot restores exactly: with this machine's cache, and with none (a new machine
    # reads the repository's index objects).
    for cache in ("agent-cache", "empty-cache"):
        agent.env["BACKAPP_CACHE_DIR"] = str(tmp_path / cache)
        for name, backup in zip("abc", (a, b, c), strict=True):
            out = tmp_path / f"restored-{cache}-{name}"
            done = agent.run("restore", str(backup["id"]), "--to", str(out))
            assert done.returncode == 0, done.stderr + done.stdout
            assert snapshot(extracted_root(out, trees[name])) == snapshot(trees[name]), name

    # Every pack is read back whole and every blob checks out.
    agent.env["BACKAPP_CACHE_DIR"] = str(tmp_path / "agent-cache")
    checked = agent.run("check", "--read-data", "100", "--json")
    assert checked.returncode == 0, checked.stderr + checked.stdout
    report = json.loads(checked.stdout)
    assert report["ok"] is True and len(report["results"]) == 3
    for result in report["results"]:
        assert result["problems"] == [] and result["packsRead"] == result["packs"] >= 2
