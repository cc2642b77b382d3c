"""End to end: compaction of partly-used packs, with a real ``backapp serve``, a real S3 endpoint on
loopback (moto), the real ``backapp-agent`` and the real ``backapp maintenance run``.

Three snapshots; each has a file of its own, and all share one big file, so the first snapshot's
data pack holds a shared file (live) and its own file (dead once it expires). Retention keeps the
newest only: pruning deletes the packs nothing uses, and the maintenance round asks the agent to
compact (the heartbeat says so). ``backapp-agent compact`` rewrites the partly-used packs; the next
maintenance run deletes them (after the grace window, zero here) and reports the bytes; what is
left restores exactly. Also: an agent that dies after uploading its new packs but before the
commit leaves everything restorable, and the next run finishes; a commit that names packs that do
not exist, or drops packs without replacing them, changes nothing at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_process import Agent, events_of, setup
from tests.support.s3 import S3Endpoint, stored
from tests.support.server_process import LiveServer, LiveServerFactory, backapp
from tests.support.trees import MIB, extracted_root, random_file, snapshot

pytestmark = [pytest.mark.e2e]


@contextmanager
def cut_off(server: LiveServer, *paths: str) -> Iterator[str]:
    """An HTTP proxy to ``server`` (its URL) that drops every request to ``paths`` without an
    answer: to the server, the agent died just before it sent them."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.split("?")[0] in paths:
                self.close_connection = True
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            r = httpx.request(self.command, server.url + self.path, content=body, headers=headers)
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()


def db(server: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "backapp.sqlite3")


def bitmaps(server: LiveServer) -> dict[str, set[int]]:
    with db(server) as con:
        rows = con.execute("SELECT backup, packs FROM backapp_snapshot").fetchall()
    out = {}
    for backup, packs in rows:
        bits = int.from_bytes(zlib.decompress(packs), "little") if packs else 0
        out[str(backup)] = {n for n in range(bits.bit_length()) if bits >> n & 1}
    return out


def data_keys(s3: S3Endpoint, bucket: str) -> dict[str, int]:
    return {k: v for k, v in stored(s3, bucket).items() if "/repo/data/" in k}


def three_snapshots(
    server: LiveServer, tmp_path: Path
) -> tuple[Any, str, dict[str, Any], Agent, Path, list[str], list[dict[str, Any]]]:
    src = tmp_path / "src"
    random_file(src / "shared" / "base.bin", 3 * MIB, seed=100)
    (src / "notes.txt").write_text("kept in every snapshot\n")
    owner, _agent_id, key, [cfg] = setup(
        server,
        {
            "name": "Photos",
            "sources": [{"path": str(src)}],
            "options": {"type": "incremental", "retentionDays": 0},
        },
    )
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"))
    ids: list[str] = []
    states: list[dict[str, Any]] = []
    for i in range(3):
        if i:
            (src / f"only-{i - 1}.bin").unlink()
        random_file(src / f"only-{i}.bin", 2 * MIB, seed=i)
        done = agent.run("run", "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        [finished] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
        ids.append(finished["logId"])
        states.append(snapshot(src))
    return owner, key, cfg, agent, src, ids, states


def expire_all_but_newest(server: LiveServer, owner: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    r = owner.request(
        "PATCH", f"/api/configs/{cfg['id']}", json={"options": {"retention": {"keepLast": 1}}}
    )
    assert r.status_code == 200, r.text
    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def heartbeat(server: LiveServer, key: str) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/api/agent/heartbeat", json={}, headers={"X-Agent-API-Key": key})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_compaction_frees_partly_used_packs_and_what_is_left_restores(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    server = live_server_factory.start(
        s3=s3_server,
        bucket=s3_bucket,
        env={"BACKAPP_TASK_INTERVAL": "3600", "BACKAPP_COMPACT_GRACE_SECONDS": "0"},
    )
    owner, key, cfg, agent, src, ids, states = three_snapshots(server, tmp_path)
    assert heartbeat(server, key)["compact"] is None

    report = expire_all_but_newest(server, owner, cfg)
    assert sorted(report["expired"]) == sorted(ids[:2])
    assert report["packs"] >= 1  # the second snapshot's own pack: nothing uses it
    compaction = report["compaction"]
    assert len(compaction["requested"]) == 1 and compaction["committed"] == []
    assert compaction["packsFreed"] == 0 and compaction["bytesFreed"] == 0
    assert heartbeat(server, key)["compact"]["requestedAt"]

    # The newest snapshot still needs the first one's data pack (the shared 3 MiB file), whose
    # other 2 MiB (the first snapshot's own file) nothing needs: a partly-used pack.
    before = data_keys(s3_server, s3_bucket)
    done = agent.run("compact")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "rewriting pack 1 of" in done.stderr and "committing" in done.stderr
    assert "Compacted:" in done.stdout and "deletes the old packs" in done.stdout
    assert heartbeat(server, key)["compact"] is None
    after_commit = data_keys(s3_server, s3_bucket)
    assert set(before) < set(after_commit), "nothing is deleted by the commit itself"

    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    [committed] = report["compaction"]["committed"]
    assert committed["packsRetired"] >= 1 and committed["bytesRetired"] > committed["bytesWritten"]
    assert report["compaction"]["packsFreed"] == committed["packsRetired"]
    assert report["compaction"]["bytesFreed"] == committed["bytesRetired"]
    assert report["bytesFreed"] >= committed["bytesRetired"]
    after = data_keys(s3_server, s3_bucket)
    removed = set(after_commit) - set(after)
    assert sum(after_commit[k] for k in removed) == committed["bytesRetired"]
    assert set(before) - set(after), "the old partly-used packs are gone from the bucket"
    # The 2 MiB nothing needed any more are gone from storage for good.
    assert sum(after.values()) <= sum(before.values()) - 2 * MIB

    # The snapshot's metadata object (for a rebuild from the bucket) names its new packs.
    [meta_key] = [k for k in stored(s3_server, s3_bucket) if k.endswith(f"/meta/{ids[2]}.json")]
    meta = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=meta_key)["Body"].read())
    named = {name for _seq, name, _size in meta["snapshot"]["packMap"]}
    assert named <= {k.rsplit("/", 1)[1] for k in after}, "no pack that is gone"

    # What is left restores exactly: with this machine's cache, and with a fresh one.
    for name, runner in (
        ("own", agent),
        ("fresh", Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "fresh"))),
    ):
        out = tmp_path / f"restored-{name}"
        done = runner.run("restore", ids[2], "--to", str(out))
        assert done.returncode == 0, done.stderr + done.stdout
        assert snapshot(extracted_root(out, src)) == states[2]
    checked = agent.run("check", "--read-data", "100", "--json")
    assert checked.returncode == 0, checked.stderr + checked.stdout

    # Backups go on from the compacted repository, and restore exactly too.
    (src / "later.txt").write_text("after the compaction\n")
    done = agent.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    [finished] = [e for e in events_of(done.stdout) if e["event"] == "backup_finished"]
    out = tmp_path / "restored-later"
    done = agent.run("restore", finished["logId"], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == snapshot(src)

    # Nothing more to do: a second compaction says so, in words and in JSON.
    again = agent.run("compact", "--json")
    assert again.returncode == 0, again.stderr + again.stdout
    assert json.loads(again.stdout)["status"] == "nothing"


def test_an_agent_that_dies_before_the_commit_changes_nothing_and_the_next_run_finishes(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    server = live_server_factory.start(
        s3=s3_server,
        bucket=s3_bucket,
        env={
            "BACKAPP_TASK_INTERVAL": "3600",
            "BACKAPP_COMPACT_GRACE_SECONDS": "0",
            "BACKAPP_PRUNE_GRACE_SECONDS": "0",
        },
    )
    owner, key, cfg, agent, src, ids, states = three_snapshots(server, tmp_path)
    expire_all_but_newest(server, owner, cfg)
    marks = bitmaps(server)
    before = data_keys(s3_server, s3_bucket)

    # The agent dies right after uploading its new packs and index: the server never hears
    # the commit (nor the abort).
    with cut_off(server, "/api/agent/repo/compact/commit", "/api/agent/repo/compact/abort") as url:
        # The same machine (its repository key and cache), through the cutting proxy.
        [key_file] = (tmp_path / "agent-config" / "repository-keys").iterdir()
        dying = Agent(
            tmp_path / "dying",
            url,
            key,
            BACKAPP_CACHE_DIR=str(tmp_path / "agent-cache"),
            BACKAPP_REPOSITORY_KEY=key_file.read_text().strip(),
        )
        died = dying.run("compact")
    assert died.returncode == 1, died.stderr + died.stdout
    assert "nothing was changed" in died.stderr
    uploaded = data_keys(s3_server, s3_bucket)
    assert set(before) < set(uploaded), "the new packs reached the bucket"
    assert bitmaps(server) == marks, "no snapshot changed"
    # A maintenance round meanwhile deletes nothing a snapshot needs.
    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    assert bitmaps(server) == marks
    out = tmp_path / "restored-after-death"
    done = agent.run("restore", ids[2], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == states[2]
    assert heartbeat(server, key)["compact"] is not None, "still asked"

    # The next run supersedes the dead one and finishes; the round after cleans up everything.
    done = agent.run("compact", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert result["status"] == "committed" and result["packsRewritten"] >= 1
    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["compaction"]["packsFreed"] == result["packsRewritten"]
    orphans = set(uploaded) - set(before)
    final = data_keys(s3_server, s3_bucket)
    assert not orphans & set(final), "the dead run's packs are pruned"
    with db(server) as con:
        stored_rows = {
            n
            for (n,) in con.execute(
                "SELECT name FROM backapp_repo_object WHERE kind = 'data' AND state = 'stored'"
            )
        }
    assert {k.rsplit("/", 1)[1] for k in final} == stored_rows
    fresh = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "fresh"))
    out = tmp_path / "restored-final"
    done = fresh.run("restore", ids[2], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == states[2]


def test_bad_and_lying_commits_change_nothing_at_once(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    # The default grace window (7 days).
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_TASK_INTERVAL": "3600"}
    )
    owner, key, cfg, agent, src, ids, states = three_snapshots(server, tmp_path)
    expire_all_but_newest(server, owner, cfg)
    marks = bitmaps(server)
    before = data_keys(s3_server, s3_bucket)
    api = httpx.Client(base_url=server.url, headers={"X-Agent-API-Key": key})
    from desktop_agent.engine.repo_protocol import encode_bitmap

    r = api.post("/api/agent/repo/compact/start", json={})
    assert r.status_code == 200, r.text
    started = r.json()
    cid = started["compactionId"]
    assert {s["backupId"] for s in started["snapshots"]} == {ids[2]}
    count = started["repository"]["packCount"]

    def commit(**body: Any) -> httpx.Response:
        return api.post("/api/agent/repo/compact/commit", json={"compactionId": cid, **body})

    # Packs that do not exist (or that this compaction never uploaded).
    r = commit(packs=["0" * 64], snapshots=[{"backupId": ids[2], "packs": encode_bitmap([0])}])
    assert r.status_code == 400 and "not uploaded by this compaction" in r.json()["detail"]
    r = commit(packs=[], snapshots=[{"backupId": ids[2], "packs": encode_bitmap([count + 5])}])
    assert r.status_code == 400 and "beyond" in r.json()["detail"]
    r = commit(snapshots=[{"backupId": ids[0], "packs": encode_bitmap([0])}])
    assert r.status_code == 400 and "not a snapshot this compaction" in r.json()["detail"]
    r = commit(packs=["nothex"])
    assert r.status_code == 400
    # A URL for a pack never uploaded: the commit names what is missing (409).
    slot = api.post(
        "/api/agent/repo/compact/objects",
        json={
            "compactionId": cid,
            "objects": [{"kind": "data", "name": "a" * 64, "size": 10, "sha256": "a" * 64}],
        },
    )
    assert slot.status_code == 200, slot.text
    seq = slot.json()["objects"][0]["seq"]
    r = commit(packs=["a" * 64], snapshots=[{"backupId": ids[2], "packs": encode_bitmap([seq])}])
    assert r.status_code == 409 and r.json()["missing"] == [{"kind": "data", "name": "a" * 64}]
    r = api.post(
        "/api/agent/repo/compact/objects",
        json={
            "compactionId": cid,
            "objects": [{"kind": "snapshot", "name": ids[2], "size": 10, "sha256": "a" * 64}],
        },
    )
    assert r.status_code == 400
    assert bitmaps(server) == marks and data_keys(s3_server, s3_bucket) == before

    # A lying agent drops every pack of the snapshot and writes nothing in their place. The
    # server cannot read packs; it accepts, but deletes nothing before the grace window ends...
    r = commit(snapshots=[{"backupId": ids[2], "packs": encode_bitmap([])}])
    assert r.status_code == 200, r.text
    lie = r.json()
    assert lie["packsRetired"] >= 2 and lie["releaseAt"]
    done = backapp(server, "maintenance", "run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["compaction"]["packsFreed"] == 0
    assert set(before) <= set(data_keys(s3_server, s3_bucket))
    # ...and the operator can undo it meanwhile: the snapshot restores exactly again.
    with db(server) as con:
        [(comp_id,)] = con.execute(
            "SELECT id FROM backapp_compaction WHERE state = 'committed'"
        ).fetchall()
    undo = backapp(server, "maintenance", "undo-compaction", str(comp_id))
    assert undo.returncode == 0, undo.stderr + undo.stdout
    assert "1 snapshot(s)" in undo.stdout
    assert bitmaps(server) == marks
    bad = backapp(server, "maintenance", "undo-compaction", str(comp_id))
    assert bad.returncode == 1 and "not committed" in bad.stderr
    fresh = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(tmp_path / "fresh"))
    out = tmp_path / "restored"
    done = fresh.run("restore", ids[2], "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == states[2]
