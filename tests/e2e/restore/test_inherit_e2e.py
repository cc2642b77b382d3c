"""End to end: a new laptop inherits the old one's backups. Two agents of one user, each in its own
HOME and config folder, a real ``backapp serve`` and a real S3 endpoint (moto) on loopback, the
real ``backapp-agent`` command line. Machine A backs up a full archive and a snapshot; B cannot
list or fetch them; after the owner's mark B lists them and restores A's archive exactly; B's
restore of A's snapshot stops with the message about the recovery code and writes nothing, and
with the account's recovery code restores it exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from desktop_agent.engine import ApiClient, HttpStorage, RestoreOptions, Snapshots
from tests.support.agent_process import Agent, events_of
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]


def machine(tmp_path: Path, name: str, server_url: str, key: str) -> Agent:
    home = tmp_path / name
    home.mkdir()
    return Agent(home, server_url, key, HOME=str(home), BACKAPP_CACHE_DIR=str(home / "cache"))


def test_new_laptop_inherits_the_old_ones_backups(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src", big=300_000)
    # A link to an absolute path is skipped by every restore on purpose (tested elsewhere).
    (src / "absolute-link").unlink()
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    a_id, a_key = owner.register_agent("old laptop")
    b_id, b_key = owner.register_agent("new laptop")
    owner.create_config(a_id, name="Full", sources=[{"path": str(src)}])
    owner.create_config(
        a_id, name="Inc", sources=[{"path": str(src)}], options={"type": "incremental"}
    )
    a = machine(tmp_path, "a", server.url, a_key)
    b = machine(tmp_path, "b", server.url, b_key)
    done = a.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    finished = {
        e["backupType"]: e["logId"]
        for e in events_of(done.stdout)
        if e["event"] == "backup_finished"
    }
    full_id, snap_id = finished["full"], finished["incremental"]
    expected = snapshot(src)

    # Without the owner's mark: nothing of A's is visible to B, and nothing is written.
    listed = b.run("backups", "--agent", a_id, "--json")
    assert listed.returncode == 1 and "replaces" in listed.stderr, listed.stderr
    mine = b.run("backups", "--json")
    assert mine.returncode == 0 and json.loads(mine.stdout)["backups"] == []
    refused = b.run("restore", full_id, "--to", str(tmp_path / "refused"))
    assert refused.returncode == 1 and "404" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused").exists()
    api = server.agent_client(b_key)
    assert api.post("/api/agent/restore", json={"backupId": full_id}).status_code == 404
    assert api.get(f"/api/agent/repo/objects?kind=snapshot&agentId={a_id}").status_code == 404

    # The owner marks that B replaces A.
    r = owner.request("POST", f"/api/agents/{b_id}/inherit", json={"fromAgentId": a_id})
    assert r.status_code == 201, r.text

    listed = b.run("backups", "--agent", a_id, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)["backups"]}
    assert set(rows) == {full_id, snap_id}
    assert rows[full_id]["type"] == "full" and rows[snap_id]["type"] == "incremental"
    assert {row["agentId"] for row in rows.values()} == {a_id}
    table = b.run("backups", "--agent", a_id)
    assert table.returncode == 0 and full_id in table.stdout and "Full" in table.stdout

    # A's full archive restores exactly on B.
    out = tmp_path / "restored-full"
    done = b.run("restore", full_id, "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == expected

    # A's snapshot needs A's repository key, which B does not have: a clear stop, nothing written.
    out = tmp_path / "restored-snapshot"
    done = b.run("restore", snap_id, "--to", str(out))
    assert done.returncode == 1, done.stderr + done.stdout
    assert "This backup was made by another machine" in done.stderr, done.stderr
    assert "--recovery-code-stdin" in done.stderr
    assert not out.exists()
    assert not (tmp_path / "b" / "cache" / "repositories" / f"{a_id}.sqlite3").exists()
    listing = b.run("ls", snap_id)
    assert listing.returncode == 1 and "another machine" in listing.stderr, listing.stderr
    # A itself still restores its snapshot (the mark changes nothing for it).
    out = tmp_path / "a-restores"
    done = a.run("restore", snap_id, "--to", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == expected

    # With A's key from a key source (what the recovery code will provide), B restores A's
    # snapshot exactly, reading A's repository through the mark.
    [key_file] = (tmp_path / "a" / "agent-config" / "repository-keys").glob("*.key")
    a_repo_key = base64.b64decode(key_file.read_text().strip())
    asked: list[str] = []

    def recovered(agent_id: str) -> bytes | None:
        asked.append(agent_id)
        return a_repo_key if agent_id == a_id else None

    client, store = ApiClient(server.url, b_key), HttpStorage()
    out = tmp_path / "b-with-key"
    with Snapshots(
        client,
        store,
        server_url=server.url,
        key_source=recovered,
        cache_dir=tmp_path / "b" / "cache",
    ) as snaps:
        result = snaps.restore(snap_id, RestoreOptions(target=out), agent_id=a_id)
    client.close()
    store.close()
    assert asked == [a_id] and result.skipped == []
    assert snapshot(extracted_root(out, src)) == expected

    # The whole way: A sets up the account's recovery code (its key is stored wrapped for it), and
    # B, with the code, restores A's snapshot exactly; a wrong code writes nothing.
    done = a.run("recovery", "init", "--json")
    assert done.returncode == 0, done.stderr
    code = json.loads(done.stdout)["recoveryCode"]
    out = tmp_path / "b-with-code"
    wrong = code[:-4] + ("AAAA" if not code.endswith("AAAA") else "BBBB")
    done = b.run("restore", snap_id, "--to", str(out), "--recovery-code-stdin", stdin=wrong + "\n")
    assert done.returncode != 0 and "recovery code" in done.stderr, done.stderr
    assert not out.exists()
    done = b.run("restore", snap_id, "--to", str(out), "--recovery-code-stdin", stdin=code + "\n")
    assert done.returncode == 0, done.stderr + done.stdout
    assert snapshot(extracted_root(out, src)) == expected
    # A's key was not put in B's key store (only a machine's own key goes back there).
    assert not (tmp_path / "b" / "agent-config" / "repository-keys").exists() or not any(
        (tmp_path / "b" / "agent-config" / "repository-keys").iterdir()
    )

    # Undoing the mark closes the door again.
    r = owner.request("DELETE", f"/api/agents/{b_id}/inherit/{a_id}")
    assert r.status_code == 204
    listed = b.run("backups", "--agent", a_id, "--json")
    assert listed.returncode == 1
    assert b.run("restore", full_id, "--to", str(tmp_path / "again")).returncode == 1
    assert not (tmp_path / "again").exists()
