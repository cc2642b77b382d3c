"""Restores end to end: a real ``backapp serve``, a real S3 endpoint (moto, and SeaweedFS for the main
paths) or the local-disk backend, and the real ``backapp-agent`` as a subprocess. Back up an awkward
tree, restore it, compare; partial restores; a replacement agent; hostile archives put into storage
through the agent API; corrupted and truncated objects; an interrupted download against real
storage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from desktop_agent.engine import ApiClient, RestoreOptions, Restorer
from tests.support.s3 import ON_BOTH, S3Endpoint, drop_bucket, new_bucket
from tests.support.server_process import LiveServer, LiveServerFactory

from .test_e2e_agent import Agent, agent_command, setup
from .trees import build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def run_in(agent: Agent, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*agent_command(), *args],
        capture_output=True,
        text=True,
        env=agent.env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def backups_of(agent: Agent) -> list[dict[str, Any]]:
    done = agent.run("backups", "--json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["backups"])


def start_server(
    factory: LiveServerFactory, backend: str, request: pytest.FixtureRequest
) -> tuple[LiveServer, S3Endpoint | None, str | None]:
    """A server on ``backend``: ``local`` disk, or a fresh bucket on ``moto`` or ``seaweedfs``."""
    if backend == "local":
        return factory.start(), None, None
    s3: S3Endpoint = request.getfixturevalue(f"{backend}_server")
    bucket = new_bucket(s3)
    request.addfinalizer(lambda: drop_bucket(s3, bucket))
    return factory.start(s3=s3, bucket=bucket), s3, bucket


def without_absolute_links(snap: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    return {k: v for k, v in snap.items() if not (v[0] == "link" and str(v[1]).startswith("/"))}


@pytest.mark.parametrize("backend", ["moto", "seaweedfs", "local"])
def test_round_trip_partial_list_and_replacement_agent(
    live_server_factory: LiveServerFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    server, _s3, _bucket = start_server(live_server_factory, backend, request)
    options = {"compressionFormat": "zstd"} if backend == "local" else {}
    owner, _agent_id, key, [cfg] = setup(
        server, {"name": "Awkward", "sources": [{"path": str(src)}], "options": options}
    )
    agent = Agent(tmp_path / "a1", server.url, key)
    done = agent.run("run")
    assert done.returncode == 0, done.stderr + done.stdout

    [listed] = backups_of(agent)
    assert listed["configId"] == cfg["id"] and listed["status"] == "completed"
    table = agent.run("backups")
    assert table.returncode == 0 and listed["id"] in table.stdout and "Awkward" in table.stdout

    # The default target: a new folder in the current directory, never the originals.
    work = tmp_path / "work"
    work.mkdir()
    restored = run_in(agent, work, "restore", listed["id"])
    assert restored.returncode == 3, restored.stderr + restored.stdout  # one link refused
    [folder] = os.listdir(work)
    assert folder.startswith("backapp-restore-Awkward-")
    out = extracted_root(work / folder, src)
    assert snapshot(out) == without_absolute_links(snapshot(src))
    assert "'absolute-link'" not in restored.stdout  # reported with its full member name
    assert "symbolic link pointing outside the target (/etc/hostname)" in restored.stdout
    assert f"SHA-256 {listed['sha256']}" in restored.stdout
    assert not (out / "absolute-link").exists()
    # A hard link stays a hard link.
    assert (out / "hardlink-to-plain").stat().st_ino == (out / "plain.txt").stat().st_ino

    # Partial restore by pattern (the original absolute path works as a pattern).
    part = tmp_path / "part"
    partial = agent.run(
        "restore", listed["id"], "--to", str(part), "--path", str(src / "sub dir"), "--path", "*.sh"
    )
    assert partial.returncode == 0, partial.stderr + partial.stdout
    got = snapshot(extracted_root(part, src))
    assert sorted(got) == ["script.sh", "sub dir", "sub dir/nested", "sub dir/nested/deep.txt"]
    assert got["script.sh"] == snapshot(src)["script.sh"]

    nothing = agent.run("restore", listed["id"], "--to", str(tmp_path / "n"), "--path", "nope")
    assert nothing.returncode == 1 and "no member matched: 'nope'" in nothing.stderr
    assert not (tmp_path / "n").exists()

    listing = agent.run("restore", listed["id"], "--list")
    assert listing.returncode == 3, listing.stderr
    assert "script.sh" in listing.stdout and "-rwxr-xr-x" in listing.stdout
    assert "Listed" in listing.stdout

    # A replacement laptop: reassign the config, the new agent restores the old backups.
    new_id, new_key = owner.register_agent("new laptop")
    r = owner.request("PATCH", f"/api/configs/{cfg['id']}", json={"agentId": new_id})
    assert r.status_code == 200, r.text
    agent2 = Agent(tmp_path / "a2", server.url, new_key)
    assert [b["id"] for b in backups_of(agent2)] == [listed["id"]]
    second = agent2.run("restore", listed["id"], "--to", str(tmp_path / "second"))
    assert second.returncode == 3, second.stderr
    assert snapshot(extracted_root(tmp_path / "second", src)) == snapshot(out)
    assert backups_of(agent) == []
    refused = agent.run("restore", listed["id"], "--to", str(tmp_path / "old"))
    assert refused.returncode == 1 and "404" in refused.stderr
    assert not (tmp_path / "old").exists()


def upload_raw(server: LiveServer, key: str, config_id: str, filename: str, data: bytes) -> str:
    """A completed backup holding exactly ``data``, through the agent API."""
    client = server.agent_client(key)
    start = client.post(
        "/api/agent/backup/start",
        json={"configId": config_id, "filename": filename, "filesize": len(data)},
    )
    assert start.status_code == 200, start.text
    body = start.json()
    upload = body["upload"]
    put = httpx.put(upload["url"], content=data, headers=upload.get("headers") or {})
    assert put.status_code == 200, put.text
    done = client.post(
        "/api/agent/backup/complete",
        json={
            "logId": body["logId"],
            "status": "completed",
            "bytesTransferred": len(data),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert done.status_code == 200, done.text
    return str(body["logId"])


def hostile_tar(outside: Path) -> bytes:
    buf = io.BytesIO()

    def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: Any) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        for k, v in kw.items():
            setattr(info, k, v)
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(str(outside / "absolute.txt"), data=b"abs")  # an absolute name, kept as is
        add("../../outside/dotdot.txt", data=b"dotdot")
        add("etc", tarfile.SYMTYPE, linkname="/etc")
        add("etc/evil.conf", data=b"through the link")
        add("out", tarfile.SYMTYPE, linkname=str(outside))
        add("out/evil.txt", data=b"through the link")
        add("hard", tarfile.LNKTYPE, linkname=str(outside / "victim"))
        add("null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("pipe", tarfile.FIFOTYPE)
        add("fine.txt", data=b"fine")
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["moto", "local"])
def test_hostile_archive_from_storage(
    live_server_factory: LiveServerFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
) -> None:
    work = tmp_path / "work"
    outside = work / "outside"
    outside.mkdir(parents=True)
    (outside / "victim").write_text("untouched")
    server, _s3, _bucket = start_server(live_server_factory, backend, request)
    _owner, _agent_id, key, [cfg] = setup(server, {"name": "Hostile"})
    data = hostile_tar(outside)
    assert tarfile.open(fileobj=io.BytesIO(data)).getnames()[0].startswith("/")
    backup_id = upload_raw(server, key, cfg["id"], "backup-evil.tar", data)
    agent = Agent(tmp_path / "a", server.url, key)
    target = work / "target"
    done = agent.run("restore", backup_id, "--to", str(target))
    assert done.returncode == 3, done.stderr + done.stdout
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "untouched"
    assert sorted(os.listdir(work)) == ["outside", "target"]
    assert os.listdir(target) == ["fine.txt"]
    assert "9 skipped" in done.stdout
    for needle in ("absolute path", "device file", "FIFO", "hard link", "(/etc)", "its folder"):
        assert needle in done.stdout, needle


def test_corrupted_local_object_is_refused(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}.txt").write_bytes(os.urandom(20_000))
    server = live_server_factory.start()
    _owner, _agent_id, key, _ = setup(server, {"name": "Local", "sources": [{"path": str(src)}]})
    agent = Agent(tmp_path / "a", server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = backups_of(agent)
    stored = server.data_dir / "storage" / "objects" / backup["s3Path"]
    data = stored.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(flipped))
    work = tmp_path / "work"
    work.mkdir()
    target = work / "target"
    done = agent.run("restore", backup["id"], "--to", str(target))
    assert done.returncode == 1, done.stdout
    assert "restore failed:" in done.stderr
    assert "SHA-256 mismatch" in done.stderr or "damaged" in done.stderr
    assert not target.exists()
    assert os.listdir(work) == []

    existing = work / "existing"
    existing.mkdir()
    stored.write_bytes(data[:-1000])  # truncated
    done = agent.run("restore", backup["id"], "--to", str(existing))
    assert done.returncode == 1 and "restore failed:" in done.stderr, done.stderr
    assert os.listdir(existing) == []

    stored.write_bytes(data)
    done = agent.run("restore", backup["id"], "--to", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(extracted_root(target, src))) == sorted(os.listdir(src))


class CutOnce(httpx.BaseTransport):
    """A real HTTP transport whose first download is cut after ``cut`` bytes."""

    def __init__(self, cut: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.cut = cut
        self.ranges: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.ranges.append(request.headers.get("Range"))
        response = self.inner.handle_request(request)
        if self.cut < 0:
            return response
        cut, self.cut = self.cut, -1
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        inner: httpx.SyncByteStream = stream

        class Cut(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                sent = 0
                for chunk in inner:
                    if sent + len(chunk) >= cut:
                        yield chunk[: cut - sent]
                        raise httpx.ReadError("connection reset by peer")
                    sent += len(chunk)
                    yield chunk

            def close(self) -> None:
                inner.close()

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Cut(), request=request
        )

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_interrupted_download_resumes_against_s3(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    _owner, _agent_id, key, _ = setup(server, {"name": "Resume", "sources": [{"path": str(src)}]})
    agent = Agent(tmp_path / "a", server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = backups_of(agent)
    transport = CutOnce(1024 * 1024 + 17)
    with (
        ApiClient(server.url, key) as api,
        Restorer(api, transport=transport, sleep=lambda _: None) as restorer,
    ):
        result = restorer.restore(backup["id"], RestoreOptions(target=tmp_path / "out"))
    assert result.resumed == 1 and result.sha256 == backup["sha256"]
    assert transport.ranges == [None, f"bytes={1024 * 1024 + 17}-"]
    restored = extracted_root(tmp_path / "out", src) / "big.bin"
    assert restored.read_bytes() == (src / "big.bin").read_bytes()


def test_in_place_restore_keeps_newer_files(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "lost.txt").write_text("lost, then found")
    (src / "docs" / "edited.txt").write_text("as backed up")
    (src / "docs" / "old.txt").write_text("as backed up")
    for name in ("lost.txt", "edited.txt", "old.txt"):
        os.utime(src / "docs" / name, (1_600_000_000, 1_600_000_000))
    server = live_server_factory.start()
    _owner, _agent_id, key, _ = setup(server, {"name": "Home", "sources": [{"path": str(src)}]})
    agent = Agent(tmp_path / "a", server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = backups_of(agent)

    (src / "docs" / "lost.txt").unlink()
    (src / "docs" / "edited.txt").write_text("edited after the backup")  # newer: kept
    (src / "docs" / "old.txt").write_text("older than the backup")
    os.utime(src / "docs" / "old.txt", (1_500_000_000, 1_500_000_000))  # older: replaced

    done = agent.run("restore", backup["id"], "--in-place", "--path", str(src / "docs"))
    assert done.returncode == 3, done.stderr + done.stdout
    assert (src / "docs" / "lost.txt").read_text() == "lost, then found"
    assert (src / "docs" / "edited.txt").read_text() == "edited after the backup"
    assert (src / "docs" / "old.txt").read_text() == "as backed up"
    assert "the existing file is newer" in done.stdout

    done = agent.run("restore", backup["id"], "--in-place", "--overwrite")
    assert done.returncode == 0, done.stderr + done.stdout
    assert (src / "docs" / "edited.txt").read_text() == "as backed up"


def test_corrupted_s3_object_is_refused(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(200_000))
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    _owner, _agent_id, key, _ = setup(server, {"name": "S3", "sources": [{"path": str(src)}]})
    agent = Agent(tmp_path / "a", server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = backups_of(agent)
    s3 = s3_server.client()
    data = s3.get_object(Bucket=s3_bucket, Key=backup["s3Path"])["Body"].read()
    work = tmp_path / "work"
    work.mkdir()
    for bad in (data[:-5000], data[:100] + bytes([data[100] ^ 0x80]) + data[101:]):
        s3.put_object(Bucket=s3_bucket, Key=backup["s3Path"], Body=bad)
        done = agent.run("restore", backup["id"], "--to", str(work / "target"))
        assert done.returncode == 1, done.stdout
        assert "restore failed:" in done.stderr
        assert os.listdir(work) == []
