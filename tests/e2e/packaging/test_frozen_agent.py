"""The frozen headless agent (PyInstaller, one file), as a user gets it: copied out of the source
tree, run with a clean environment from a temporary folder, against a real ``backapp serve`` and a
real S3 endpoint on loopback. It must print its version, pair (no keychain on a CI box: the key goes
to a 0600 file), back up, and the archive must land in S3 and be ``completed``; then run as the
service units run it (``daemon``), take a Back Up Now over its WebSocket, and stop cleanly on
SIGTERM."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.packaging import EXE, clean_env, package_version
from tests.support.paths import ROOT
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e


def test_the_frozen_agent_carries_what_it_needs_and_no_qt(frozen_agent: Path) -> None:
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(frozen_agent))
    files = set(archive.toc)
    modules = set(archive.open_embedded_archive("PYZ.pyz").toc)

    # keyring finds its backends through entry points: the metadata and every backend module.
    assert any(f.startswith("keyring-") and f.endswith("entry_points.txt") for f in files)
    for backend in ("SecretService", "macOS", "Windows", "kwallet", "fail", "chainer"):
        assert f"keyring.backends.{backend}" in modules, backend
    # --version reads the package metadata; TLS needs certifi's bundle.
    assert any(f.startswith("backapp") and f.endswith(("/METADATA", "/PKG-INFO")) for f in files)
    assert "certifi/cacert.pem" in files
    for needed in ("httpx", "croniter", "websockets.sync.client", "zstandard", "msgspec"):
        assert needed in modules, needed
    # A recovery code's key is argon2id(code, salt), wrapped with age (bech32 keys): `recovery`
    # imports them where it uses them, so a missing one shows only then.
    for needed in ("argon2.low_level", "bech32", "pyrage"):
        assert needed in modules, needed
    assert any(f.startswith("zstandard/backend_c") for f in files)
    # The snapshots' chunker: pyfastcdc's compiled modules, each of them (one imports another
    # from C, which the analysis does not see; without it the chunker is pure Python).
    for compiled in ("chunk", "constants", "fastcdc"):
        assert any(f.startswith(f"pyfastcdc/cy/{compiled}.") for f in files), compiled
    # The headless agent carries no Qt, and none of the server.
    qt = sorted(m for m in modules if m.startswith(("PySide6", "shiboken6", "desktop_agent.gui")))
    assert qt == [] and not any("Qt6" in f or "PySide6" in f for f in files)
    assert not any(
        m == "backend" or m.startswith(("backend.", "litestar", "boto3")) for m in modules
    )


def test_the_frozen_agent_backs_up_to_s3_from_outside_the_source_tree(
    frozen_agent: Path,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    agent = bin_dir / f"backapp-agent{EXE}"
    shutil.copy2(frozen_agent, agent)
    assert ROOT not in agent.resolve().parents
    home = tmp_path / "home"
    config_dir = home / "agent-config"
    env = clean_env(home, BACKAPP_AGENT_CONFIG_DIR=str(config_dir), TZ="Europe/Paris")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(agent), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,  # not the source tree: nothing may be imported from there
            timeout=300,
            check=False,
        )

    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"backapp-agent {package_version()}"

    src = tmp_path / "src"
    (src / "docs" / "deep").mkdir(parents=True)
    (src / "docs" / "report.txt").write_text("quarterly numbers\n" * 500)
    (src / "docs" / "deep" / "ünïcödé name.md").write_text("# notes\n")
    (src / "photo.bin").write_bytes(bytes(range(256)) * 4096)
    # Heartbeats every 5 minutes: in the daemon part, only the WebSocket can bring Back Up Now in time.
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_POLL_INTERVAL": "300"}
    )
    owner = server.owner()
    agent_id, key = owner.register_agent("frozen agent")
    config = owner.create_config(
        agent_id,
        name="Frozen",
        sources=[{"path": str(src)}],
        options={"schedule": {"preset": "daily", "at": "03:00"}},
    )

    configure = run("configure", "--server", server.url, "--api-key-stdin", stdin=key + "\n")
    assert configure.returncode == 0, configure.stderr
    assert "(the key works)" in configure.stdout
    # No session bus, no keychain: the key is in a 0600 file, and the agent said so.
    key_file = config_dir / "api-key"
    assert f"in the file {key_file}" in configure.stdout, configure.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == key

    # -- one `run` ----------------------------------------------------------------------------------
    done = run("run", "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    finished = [e for e in events if e["event"] == "backup_finished"]
    assert [e["configId"] for e in finished] == [config["id"]]

    [backup] = owner.backups()
    assert backup["status"] == "completed", backup
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=backup["s3Path"])["Body"].read()
    assert len(body) == backup["size"] and hashlib.sha256(body).hexdigest() == backup["sha256"]
    archive = tmp_path / backup["filename"]
    archive.write_bytes(body)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("docs/deep/ünïcödé name.md") for n in names), names
    assert any(n.endswith("photo.bin") for n in names)

    status = run("status")
    assert status.returncode == 0, status.stderr
    assert "Connection: online" in status.stdout and backup["filename"] in status.stdout
    # The schedule maths (croniter, zoneinfo) work frozen: the next run, in the machine's zone.
    assert "(Europe/Paris)" in status.stdout and "next:" in status.stdout, status.stdout
    assert "Traceback" not in done.stderr + status.stderr

    # -- `daemon` (what the service units run): Back Up Now over the WebSocket, then SIGTERM ----------
    output = tmp_path / "daemon.log"
    with open(output, "w+") as log:
        daemon = subprocess.Popen(
            [str(agent), "daemon", "--tick", "0.5"],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        try:
            _wait(lambda: "agent socket connected" in output.read_text(), daemon, output)
            time.sleep(1.0)  # its first heartbeat has been answered
            r = owner.request("POST", f"/api/configs/{config['id']}/run")
            assert r.status_code == 202, r.text
            _wait(
                lambda: any(
                    b["trigger"] == "request" and b["status"] == "completed"
                    for b in owner.backups()
                ),
                daemon,
                output,
            )
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
    assert len(owner.backups()) == 2


def _wait(condition: Callable[[], bool], process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.mark.skipif(sys.platform != "linux", reason="the ldd check is for Linux builds")
def test_the_frozen_agent_needs_only_the_base_system(frozen_agent: Path) -> None:
    """One file; it unpacks its own libraries and links only against the C library."""
    if shutil.which("ldd") is None:
        pytest.skip("no ldd")
    out = subprocess.run(["ldd", str(frozen_agent)], capture_output=True, text=True).stdout
    libs = {line.split()[0] for line in out.splitlines() if "=>" in line}
    assert libs <= {"libdl.so.2", "libz.so.1", "libpthread.so.0", "libc.so.6"}, libs
