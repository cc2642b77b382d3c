"""End to end: the real ``backapp-agent`` against a real ``backapp serve`` that advertises
``part-crc32`` uploads its multipart archive with CRC32 part checksums, on S3 (moto and SeaweedFS) and
on the local disk backend; the archive lands byte for byte, with the whole archive's SHA-256 as before."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import zlib
from pathlib import Path

import pytest

from tests.support.s3 import ON_BOTH, S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory

from .test_e2e_agent import Agent, extract, random_file, s3_object, setup
from .trees import MIB, build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]


def part_checksums(server: LiveServer) -> list[str]:
    with sqlite3.connect(server.data_dir / "backapp.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT part_checksum FROM backapp_backup_log")]


def run_multipart(server: LiveServer, tmp_path: Path, src: Path) -> dict[str, object]:
    owner, _agent_id, key, _ = setup(
        server,
        {"name": "Big", "sources": [{"path": str(src)}], "options": {"compressionFormat": "zstd"}},
    )
    agent = Agent(
        tmp_path,
        server.url,
        key,
        BACKAPP_AGENT_PART_SIZE="5MiB",
        BACKAPP_AGENT_MULTIPART_THRESHOLD="5MiB",
    )
    done = agent.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    [backup] = owner.backups()
    assert backup["status"] == "completed", backup
    return dict(backup)


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_crc32_parts_on_s3(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    random_file(src / "photos" / "raw.bin", 13 * MIB)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    backup = run_multipart(server, tmp_path, src)
    assert part_checksums(server) == ["crc32"]
    key = str(backup["s3Path"])
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
    # S3 (and moto) keep the upload's algorithm, as a full-object CRC32 (no SHA-256): the CRC32
    # of the whole archive, which the agent computed over its stream and the server compared.
    data = s3_object(s3_server, s3_bucket, key)
    assert head.get("ChecksumType") == "FULL_OBJECT" and "ChecksumSHA256" not in head
    whole_crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert head.get("ChecksumCRC32") == whole_crc
    assert len(data) > 13 * MIB and backup["sha256"] == hashlib.sha256(data).hexdigest()
    out = extract(data, tmp_path / "out", str(backup["filename"]))
    assert snapshot(extracted_root(out, src)) == snapshot(src)


def test_crc32_parts_on_local_storage(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    random_file(src / "big.random", 12 * MIB)
    server = live_server_factory.start()
    backup = run_multipart(server, tmp_path, src)
    assert part_checksums(server) == ["crc32"]
    data = (server.data_dir / "storage" / "objects" / str(backup["s3Path"])).read_bytes()
    assert len(data) > 10 * MIB and backup["sha256"] == hashlib.sha256(data).hexdigest()
    out = extract(data, tmp_path / "out", str(backup["filename"]))
    assert snapshot(extracted_root(out, src)) == snapshot(src)
