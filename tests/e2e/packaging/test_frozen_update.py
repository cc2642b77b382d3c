"""Auto-update end to end: a frozen agent A (the build under test) is updated by a real
``backapp serve`` to a frozen agent B (the same sources built as the next version), both made
with PyInstaller; a tampered build in the bucket is refused first.

The publisher's side is the real one too: ``backapp agent-release keygen`` makes the release key,
``sign`` signs each build, ``add`` stores it; server and agent are told the key's public half
(``BACKAPP_RELEASE_PUBLIC_KEY``). The agent runs as a user would have it: copied out of the
source tree into a folder of its own, with a clean environment."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.packaging import EXE, clean_env, frozen_version
from tests.support.paths import ROOT
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory, backapp

pytestmark = pytest.mark.e2e


def _publish(server: LiveServer, key_file: Path, build: Path, version: str) -> dict[str, str]:
    """``agent-release sign`` then ``add``, as the publisher does; the stored release."""
    signed = backapp(
        server, "agent-release", "sign", str(build), "--platform", sys.platform,
        "--version", version, "--key", str(key_file),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    added = backapp(
        server, "agent-release", "add", str(build), "--platform", sys.platform,
        "--version", version, "--signature", signed.stdout.strip(), "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    release: dict[str, str] = json.loads(added.stdout)
    return release


def test_a_frozen_agent_is_updated_by_the_server_and_refuses_a_tampered_build(
    frozen_agent: Path,
    frozen_agent_next: Path,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    version_a = frozen_version(frozen_agent)
    version_b = frozen_version(frozen_agent_next)
    assert version_b != version_a
    tampered_version = version_b + ".post1"  # newer than B: what "latest" offers first

    # -- the publisher's key, on their own machine ------------------------------------------------
    key_file = tmp_path / "release-key.pem"
    made = subprocess.run(
        [sys.executable, "-m", "backend.cli", "agent-release", "keygen", "--out", str(key_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    public_key = made.stdout.strip()

    server = live_server_factory.start(
        s3=s3_server,
        bucket=s3_bucket,
        env={"BACKAPP_POLL_INTERVAL": "2", "BACKAPP_RELEASE_PUBLIC_KEY": public_key},
    )
    _publish(server, key_file, frozen_agent_next, version_b)
    # A genuine build, signed, then changed in the bucket (a bucket someone else can write to).
    release = _publish(server, key_file, frozen_agent_next, tampered_version)
    s3 = s3_server.client()
    body = bytearray(s3.get_object(Bucket=s3_bucket, Key=release["objectKey"])["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=s3_bucket, Key=release["objectKey"], Body=bytes(body))

    # -- agent A, installed in a folder of its own -------------------------------------------------
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    agent = bin_dir / f"backapp-agent{EXE}"
    shutil.copy2(frozen_agent, agent)
    previous = bin_dir / f"backapp-agent{EXE}.previous"
    home = tmp_path / "home"
    config_dir = home / "agent-config"
    env = clean_env(
        home, BACKAPP_AGENT_CONFIG_DIR=str(config_dir), BACKAPP_RELEASE_PUBLIC_KEY=public_key
    )

    def run(
        program: Path, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )

    owner = server.owner()
    agent_id, api_key = owner.register_agent("frozen agent", platform=sys.platform)
    configured = run(agent, "configure", "--server", server.url, "--api-key-stdin", stdin=api_key)
    assert configured.returncode == 0, configured.stderr

    # -- the tampered build: offered (newest), downloaded, refused; nothing changes ----------------
    check = run(agent, "update", "--check", "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["status"] == "available"
    assert json.loads(check.stdout)["version"] == tampered_version

    refused = run(agent, "update")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert (
        f"update {tampered_version} refused: the download does not match its SHA-256"
        in refused.stderr
    )
    assert run(agent, "--version").stdout.strip() == f"backapp-agent {version_a}"
    assert sorted(p.name for p in bin_dir.iterdir()) == [agent.name]  # no download left behind

    # -- the owner pins B: the daemon of A installs it at an idle moment and restarts as B ---------
    pinned = owner.request(
        "PUT", "/api/agent-updates", json={"policy": "pin", "version": version_b}
    )
    assert pinned.status_code == 200, pinned.text

    output = tmp_path / "daemon.log"
    with open(output, "w+") as log:
        daemon = subprocess.Popen(
            [str(agent), "daemon", "--tick", "0.5", "--no-socket"],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        try:
            confirmed = f"the update from {version_a} to {version_b} is confirmed"
            _wait(lambda: confirmed in output.read_text(), daemon, output)
            said = output.read_text()
            assert f"updated {version_a} to {version_b}" in said
            assert "daemon restarting as the new build" in said
            assert run(agent, "--version").stdout.strip() == f"backapp-agent {version_b}"
            assert run(previous, "--version").stdout.strip() == f"backapp-agent {version_a}"
            assert not (config_dir / "update-pending.json").exists()
            # The server sees the new version (the owner's agent list).
            agents = owner.request("GET", "/api/agents").json()
            listed = agents["agents"] if isinstance(agents, dict) else agents
            [mine] = [a for a in listed if a["id"] == agent_id]
            assert mine["version"] == version_b
            time.sleep(3)  # more heartbeats: B is what the pin asks for, nothing more happens
            assert output.read_text().count("updated ") == 1
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                raise
    said = output.read_text()
    assert code == 0, said
    assert "Traceback" not in said
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted([agent.name, previous.name])


def _wait(condition: Callable[[], bool], process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
