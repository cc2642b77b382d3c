"""End to end: limits and commands set on the server reach a running ``backapp-agent daemon``
(a subprocess) through its heartbeat, against a real ``backapp serve`` and moto S3 on loopback.

- A limit saved with the agent page's form reaches the daemon within a heartbeat (the server's poll
  interval is 1 s here: the stand-in for the one-minute promise); the running backup's progress
  says "limited to 4 Mbit/s"; raising the limit during that backup speeds it up without a restart.
- A failing pre-command stops the backup, its output in the history and the agent's log.
- A config with commands on an agent that does not allow them fails, saying how to allow it;
  nothing ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_process import Agent, Daemon, setup, wait_for_backup
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory, Owner
from tests.support.web import csrf_in

pytestmark = [pytest.mark.e2e]

MIB = 1024 * 1024


def start_server(factory: LiveServerFactory, s3: S3Endpoint, bucket: str) -> LiveServer:
    return factory.start(s3=s3, bucket=bucket, env={"BACKAPP_POLL_INTERVAL": "1"})


def run_now(owner: Owner, config_id: str) -> None:
    r = owner.request("POST", f"/api/configs/{config_id}/run")
    assert r.status_code == 202, r.text


def save_limits(owner: Owner, agent_id: str, **fields: str) -> Any:
    """The agent page's Bandwidth form, as a browser posts it."""
    page = owner.http.get(f"/agents/{agent_id}")
    assert page.status_code == 200, page.text
    return owner.http.post(
        f"/agents/{agent_id}/limits", data={"_csrf": csrf_in(page.text), **fields}
    )


def agent_log(owner: Owner, agent_id: str) -> list[dict[str, Any]]:
    r = owner.request("GET", f"/api/agents/{agent_id}/logs", params={"limit": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["logs"])


def test_a_limit_from_the_agent_page_reaches_a_running_backup(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "random.bin").write_bytes(os.urandom(12 * MIB))  # incompressible
    server = start_server(live_server_factory, s3_server, s3_bucket)
    owner, agent_id, key, [cfg] = setup(server, {"name": "Photos", "sources": [{"path": str(src)}]})
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_MULTIPART_THRESHOLD=str(5 * MIB),
        BACKAPP_AGENT_PART_SIZE=str(5 * MIB),
    )
    daemon = Daemon(agent)
    try:
        # Bad input first: refused in words, nothing stored.
        bad = save_limits(owner, agent_id, limit_upload="0")
        assert bad.status_code == 400 and "more than 0" in bad.text
        bad = save_limits(
            owner, agent_id, window_days="weekdays", window_from="9am", window_to="18:00"
        )
        assert bad.status_code == 400 and "HH:MM" in bad.text
        assert owner.request("GET", f"/api/agents/{agent_id}").json()["agent"]["limits"] is None

        saved = save_limits(owner, agent_id, limit_upload="4")
        assert saved.status_code in (200, 303), saved.text
        assert (
            owner.request("GET", f"/api/agents/{agent_id}").json()["agent"]["limits"]["upload"] == 4
        )
        daemon.wait_for_line("bandwidth: upload limited to 4 Mbit/s", timeout=30)

        run_now(owner, cfg["id"])
        # 12 MiB at 4 Mbit/s is 25 s: the progress says why it is slow.
        deadline = time.monotonic() + 30
        limited = None
        while limited is None:
            assert time.monotonic() < deadline, daemon.output()
            for backup in owner.backups(configId=cfg["id"]):
                progress = backup.get("progress") or {}
                if progress.get("limit") == "limited to 4 Mbit/s":
                    limited = backup
            time.sleep(0.2)
        page = owner.http.get(f"/backups/{limited['id']}")
        changed_at = time.monotonic()
        r = owner.request("PATCH", f"/api/agents/{agent_id}", json={"limits": {"upload": 400}})
        assert r.status_code == 200, r.text
        done = wait_for_backup(
            owner, lambda b: b["id"] == limited["id"] and b["status"] != "running", daemon, 60
        )
        took = time.monotonic() - changed_at
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert done["status"] == "completed", done
    # Without the change the rest (at least 5 MiB) would take 10 s more at 4 Mbit/s.
    assert took < 9, (took, daemon.output())
    assert "bandwidth: upload limited to 400 Mbit/s" in daemon.output()
    assert page.status_code == 200


def test_a_failing_pre_command_stops_the_backup_with_its_output(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    marker = tmp_path / "post-ran"
    server = start_server(live_server_factory, s3_server, s3_bucket)
    owner, agent_id, key, [cfg] = setup(
        server,
        {
            "name": "Database",
            "sources": [{"path": str(src)}],
            "options": {
                "preCommand": "echo 'lvcreate: Volume group \"vg0\" not found'; exit 5",
                "postCommand": f"touch {marker}",
            },
        },
    )
    agent = Agent(tmp_path, server.url, key)
    done = agent.run("configure", "--allow-server-commands", "--api-key-stdin", stdin="\n")
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout
    result = agent.run("run", "--json")
    backup = owner.backups(configId=cfg["id"])[0]
    assert backup["status"] == "failed"
    assert "pre-command failed with exit status 5" in backup["error"]
    assert 'Volume group "vg0" not found' in backup["error"]
    logged = agent_log(owner, agent_id)
    pre = [e for e in logged if e["message"].startswith("The preCommand of 'Database'")]
    assert pre and 'Volume group "vg0" not found' in pre[0]["metadata"]["output"]
    assert pre[0]["level"] == "error" and pre[0]["metadata"]["exitCode"] == 5
    assert not marker.exists()  # the post-command follows only a pre-command that succeeded
    assert not [k for k in s3_keys(s3_server, s3_bucket) if not k.startswith("server/")]
    assert result.returncode != 0


def test_commands_need_the_machines_permission(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    """The pre-command runs before the sources are looked at (as an LVM snapshot is mounted
    there), for archives and snapshots alike, and only once the machine allows it."""
    server = start_server(live_server_factory, s3_server, s3_bucket)
    configs = []
    for kind in ("full", "incremental"):
        src = tmp_path / f"mounted-{kind}"
        configs.append(
            {
                "name": kind,
                "sources": [{"path": str(src)}],
                "options": {
                    "type": kind,
                    "preCommand": f"mkdir -p {src} && echo frozen > {src}/a.txt",
                    "postCommand": f'rm -rf {src}; echo "$BACKAPP_BACKUP_STATUS" > {src}.status',
                },
            }
        )
    owner, _agent_id, key, made = setup(server, *configs)
    agent = Agent(tmp_path, server.url, key)
    agent.run("run", "--json")
    for cfg in made:
        backup = owner.backups(configId=cfg["id"])[0]
        assert backup["status"] == "failed", backup
        assert "does not run commands set on the server" in backup["error"]
        assert "backapp-agent configure --allow-server-commands" in backup["error"]
    assert not list(tmp_path.glob("mounted-*"))  # nothing ran
    # Allowed on the machine, the same configs run their commands and back up.
    done = agent.run("configure", "--allow-server-commands", "--api-key-stdin", stdin="\n")
    assert done.returncode == 0, done.stderr
    result = agent.run("run", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    for cfg in made:
        assert owner.backups(configId=cfg["id"])[0]["status"] == "completed"
        kind = cfg["options"]["type"]
        assert not (tmp_path / f"mounted-{kind}").exists()  # the post-command cleaned up
        assert (tmp_path / f"mounted-{kind}.status").read_text() == "completed\n"


def s3_keys(s3: S3Endpoint, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]
