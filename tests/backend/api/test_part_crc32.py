"""Multipart uploads whose parts carry CRC32 instead of SHA-256 (``partChecksum: "crc32"``), through
the real ASGI app and local storage, on SQLite and PostgreSQL; agents that send SHA-256 parts (and
know nothing of ``partChecksum``) keep working."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

from backend.backups.tables import BackupLog
from tests.support.api import ApiClient, local_path

FILENAME = "backup-2025-01-07-143022.tar.zst"
MiB = 1024 * 1024
PART = "/api/agent/backup/upload/part"
ASSEMBLE = "/api/agent/backup/upload/complete"


def crc(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _setup(client: ApiClient) -> tuple[str, str]:
    await client.signup()
    agent_id, key = await client.register_agent("Laptop", "linux")
    config = await client.create_config(agent_id)
    return key, config["id"]


async def _start(client: ApiClient, key: str, config_id: str, **extra: Any) -> dict[str, Any]:
    body = {"configId": config_id, "filename": FILENAME, "filesize": 11, "multipart": True}
    r = await client.agent_post(key, "/api/agent/backup/start", {**body, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _put_part(
    client: ApiClient, key: str, log_id: str, number: int, data: bytes, **checksum: str
) -> str:
    body = {"logId": log_id, "partNumber": number, "size": len(data), **checksum}
    r = await client.agent_post(key, PART, body)
    assert r.status_code == 200, r.text
    part = r.json()["part"]
    put = await client.raw.put(local_path(part["url"]), content=data, headers=part["headers"])
    assert put.status_code == 200, put.text
    return str(put.headers["etag"])


async def test_heartbeat_advertises_part_crc32(client: ApiClient) -> None:
    key, _ = await _setup(client)
    r = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1", "platform": "x"})
    assert r.status_code == 200
    assert "part-crc32" in r.json()["features"]


async def test_multipart_backup_with_crc32_parts(client: ApiClient) -> None:
    key, config_id = await _setup(client)
    start = await _start(client, key, config_id, partChecksum="crc32")
    assert start["upload"]["method"] == "MULTIPART"
    assert start["upload"]["partChecksum"] == "crc32"
    log_id = start["logId"]
    row = await BackupLog.select(BackupLog.part_checksum).first()
    assert row == {"part_checksum": "crc32"}

    chunks = [b"a" * (5 * MiB), b"tail"]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        etag = await _put_part(client, key, log_id, number, chunk, crc32=crc(chunk))
        parts.append({"partNumber": number, "etag": etag, "crc32": crc(chunk)})
    r = await client.agent_post(key, ASSEMBLE, {"logId": log_id, "parts": parts})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == 5 * MiB + 4
    whole = sha(b"".join(chunks))
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": log_id, "status": "completed", "size": 5 * MiB + 4, "sha256": whole},
    )
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["status"] == "completed" and backup["sha256"] == whole


async def test_an_old_agent_with_sha256_parts_still_works(client: ApiClient) -> None:
    key, config_id = await _setup(client)
    start = await _start(client, key, config_id)  # no partChecksum: an agent from before
    assert start["upload"]["partChecksum"] == "sha256"
    log_id = start["logId"]
    assert await BackupLog.select(BackupLog.part_checksum).first() == {"part_checksum": "sha256"}
    chunk = b"only part"
    etag = await _put_part(client, key, log_id, 1, chunk, sha256=sha(chunk))
    r = await client.agent_post(
        key,
        ASSEMBLE,
        {"logId": log_id, "parts": [{"partNumber": 1, "etag": etag, "sha256": sha(chunk)}]},
    )
    assert r.status_code == 200 and r.json()["size"] == len(chunk), r.text
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": log_id, "status": "completed", "size": len(chunk), "sha256": sha(chunk)},
    )
    assert done.json()["status"] == "completed", done.text


async def test_wrong_or_malformed_part_checksums_are_400(client: ApiClient) -> None:
    key, config_id = await _setup(client)
    bad_start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": FILENAME, "multipart": True, "partChecksum": "md5"},
    )
    assert bad_start.status_code == 400 and "partChecksum" in bad_start.text
    crc_log = (await _start(client, key, config_id, partChecksum="crc32"))["logId"]
    sha_log = (await _start(client, key, config_id, filename="other.tar.zst"))["logId"]

    def part(log_id: str, **checksum: str) -> dict[str, Any]:
        return {"logId": log_id, "partNumber": 1, "size": 5, **checksum}

    for body, field in [
        (part(crc_log, sha256=sha(b"hello")), "sha256"),
        (part(crc_log), "crc32"),
        (part(crc_log, crc32="NhCmhg"), "crc32"),  # not the base64 of 4 bytes
        (part(crc_log, crc32="NhCmhg==", sha256=sha(b"hello")), "sha256"),
        (part(sha_log, crc32=crc(b"hello")), "crc32"),
        (part(sha_log), "sha256"),
    ]:
        r = await client.agent_post(key, PART, body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["detail"], (body, r.text)

    etag = await _put_part(client, key, crc_log, 1, b"hello", crc32=crc(b"hello"))
    for parts, field in [
        ([{"partNumber": 1, "etag": etag, "sha256": sha(b"hello")}], "parts[0].sha256"),
        ([{"partNumber": 1, "etag": etag}], "parts[0].crc32"),
        ([{"partNumber": 1, "etag": etag, "crc32": "AAAA"}], "crc32"),
    ]:
        r = await client.agent_post(key, ASSEMBLE, {"logId": crc_log, "parts": parts})
        assert r.status_code == 400, (parts, r.text)
        assert field in r.json()["detail"], (parts, r.text)
    r = await client.agent_post(
        key,
        ASSEMBLE,
        {"logId": sha_log, "parts": [{"partNumber": 1, "etag": etag, "crc32": crc(b"hello")}]},
    )
    assert r.status_code == 400 and "parts[0].crc32" in r.json()["detail"], r.text


async def test_a_corrupted_crc32_part_is_refused_by_the_storage(client: ApiClient) -> None:
    key, config_id = await _setup(client)
    log_id = (await _start(client, key, config_id, partChecksum="crc32"))["logId"]
    body = {"logId": log_id, "partNumber": 1, "size": 5, "crc32": crc(b"hello")}
    part = (await client.agent_post(key, PART, body)).json()["part"]
    assert part["headers"] == {}  # local storage: everything is signed into the URL
    put = await client.raw.put(local_path(part["url"]), content=b"hellx", headers=part["headers"])
    assert put.status_code == 400 and "CRC32" in put.json()["detail"], put.text
    r = await client.agent_post(
        key,
        ASSEMBLE,
        {"logId": log_id, "parts": [{"partNumber": 1, "etag": '"x"', "crc32": crc(b"hello")}]},
    )
    assert r.status_code == 400 and "not uploaded" in r.json()["detail"], r.text
