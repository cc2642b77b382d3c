"""An agent can only add objects, at exactly the key the server signed for it.

A real ``backapp serve`` on SeaweedFS, which (unlike moto) checks what S3 checks of a pre-signed
request: the signature over method, key, query and signed headers, the expiry, and the checksum headers
against the body. Every way an agent could bend the URLs the server hands it is tried, and the bucket
is looked at afterwards.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest

from tests.support.s3 import ON_SEAWEEDFS, S3Endpoint
from tests.support.server_process import LiveServer, LiveServerFactory

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("s3_server", ON_SEAWEEDFS, indirect=True),
]

MiB = 1024 * 1024
NO_CATALOG_COPIES = {"BACKAPP_CATALOG_INTERVAL_HOURS": "0"}


def code_of(response: httpx.Response) -> str:
    found = re.search(r"<Code>([^<]*)</Code>", response.text)
    return f"{response.status_code} {found.group(1) if found else '?'}"


def stored(s3: S3Endpoint, bucket: str) -> dict[str, int]:
    """What the URLs put into the bucket (not the metadata object the server itself writes
    beside a completed backup)."""
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: item["Size"] for item in listed if "/meta/" not in item["Key"]}


def two_agents(server: LiveServer) -> tuple[Any, list[tuple[httpx.Client, dict[str, Any]]]]:
    owner = server.owner()
    agents = []
    for name in ("laptop", "desktop"):
        agent_id, key = owner.register_agent(name)
        config = owner.create_config(agent_id, name=f"{name} files")
        agents.append((server.agent_client(key), config))
    return owner, agents


def start(agent: httpx.Client, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = agent.post(
        "/api/agent/backup/start",
        json={"configId": config["id"], "filename": "backup.tar.gz", **fields},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_put_url_adds_exactly_its_object_and_nothing_else(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str
) -> None:
    # No periodic catalog copy: the bucket holds what the URLs put there (and the metadata).
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket, env=NO_CATALOG_COPIES)
    owner, [(laptop, laptop_config), (desktop, desktop_config)] = two_agents(server)
    payload = b"tar.gz bytes " * 1000
    sha = hashlib.sha256(payload).hexdigest()
    mine = start(laptop, laptop_config, size=len(payload), sha256=sha)
    theirs = start(desktop, desktop_config, size=len(payload), sha256=sha)
    url, headers = mine["upload"]["url"], mine["upload"]["headers"]
    path, their_path = mine["upload"]["s3Path"], theirs["upload"]["s3Path"]
    assert path != their_path and headers["if-none-match"] == "*"

    tampered = payload[:-1] + b"!"
    attempts: dict[str, tuple[str, str, dict[str, str], bytes]] = {
        "another agent's key": ("PUT", url.replace(path, their_path), headers, payload),
        "a key next to it": ("PUT", url.replace(path, path + ".2"), headers, payload),
        "a key outside the user's folder": (
            "PUT",
            url.replace(path, "users/someone-else/" + path.split("/", 2)[2]),
            headers,
            payload,
        ),
        "another body of its size": ("PUT", url, headers, tampered),
        "a bigger body": (
            "PUT",
            url,
            {**headers, "content-length": str(len(payload) + 1)},
            payload + b"!",
        ),
        "no checksum header": (
            "PUT",
            url,
            {k: v for k, v in headers.items() if k != "x-amz-checksum-sha256"},
            tampered,
        ),
        "reading with it": ("GET", url, {}, b""),
        "deleting with it": ("DELETE", url, {}, b""),
    }
    answers = {
        what: code_of(httpx.request(method, u, headers=h, content=body))
        for what, (method, u, h, body) in attempts.items()
    }
    assert answers == {
        **dict.fromkeys(attempts, "403 SignatureDoesNotMatch"),
        "another body of its size": "400 BadDigest",
    }
    assert stored(s3_server, s3_bucket) == {}

    assert httpx.put(url, content=payload, headers=headers).status_code == 200
    done = laptop.post(
        "/api/agent/backup/complete",
        json={"logId": mine["logId"], "status": "completed", "size": len(payload), "sha256": sha},
    )
    assert done.status_code == 200, done.text
    # The finished backup cannot be replaced: not with its own URL, nor with its download URL.
    assert code_of(httpx.put(url, content=payload, headers=headers)) == "412 PreconditionFailed"
    backup = next(b for b in owner.backups() if b["s3Path"] == path)
    assert backup["status"] == "completed"
    download = owner.request("GET", f"/api/backups/{backup['id']}/download").json()["download"]
    answers = {
        "PUT": code_of(httpx.put(download["url"], content=b"evil")),
        "PUT elsewhere": code_of(
            httpx.put(download["url"].replace(path, their_path), content=b"evil")
        ),
        "DELETE": code_of(httpx.delete(download["url"])),
    }
    assert answers == dict.fromkeys(answers, "403 SignatureDoesNotMatch")
    assert httpx.get(download["url"]).content == payload
    assert stored(s3_server, s3_bucket) == {path: len(payload)}


def test_a_part_url_adds_exactly_its_part(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str
) -> None:
    # No periodic catalog copy: the bucket holds what the URLs put there (and the metadata).
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket, env=NO_CATALOG_COPIES)
    _owner, [(laptop, laptop_config), (desktop, desktop_config)] = two_agents(server)
    mine = start(laptop, laptop_config, filesize=6 * MiB, multipart=True)
    theirs = start(desktop, desktop_config, filesize=6 * MiB, multipart=True)
    log_id = mine["logId"]
    path, their_path = mine["upload"]["s3Path"], theirs["upload"]["s3Path"]
    upload_id, their_upload = mine["upload"]["uploadId"], theirs["upload"]["uploadId"]
    chunks = [bytes([7]) * (5 * MiB), b"the end"]

    def part_url(number: int, chunk: bytes) -> dict[str, Any]:
        response = laptop.post(
            "/api/agent/backup/upload/part",
            json={
                "logId": log_id,
                "partNumber": number,
                "size": len(chunk),
                "sha256": hashlib.sha256(chunk).hexdigest(),
            },
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["part"])

    first = part_url(1, chunks[0])
    url, headers = first["url"], first["headers"]
    attempts = {
        "another part number": (url.replace("partNumber=1", "partNumber=2"), headers, chunks[0]),
        "another agent's upload": (
            url.replace(path, their_path).replace(upload_id, their_upload),
            headers,
            chunks[0],
        ),
        "another body of its size": (url, headers, bytes([8]) * (5 * MiB)),
        "a smaller body": (url, {**headers, "content-length": "7"}, b"the end"),
    }
    answers = {
        what: code_of(httpx.put(u, content=body, headers=h, timeout=60))
        for what, (u, h, body) in attempts.items()
    }
    assert answers == {
        **dict.fromkeys(attempts, "403 SignatureDoesNotMatch"),
        "another body of its size": "400 BadDigest",
    }
    client = s3_server.client()
    for key, upload in ((path, upload_id), (their_path, their_upload)):
        assert client.list_parts(Bucket=s3_bucket, Key=key, UploadId=upload).get("Parts", []) == []

    parts = []
    for number, chunk in enumerate(chunks, start=1):
        part = first if number == 1 else part_url(number, chunk)
        put = httpx.put(part["url"], content=chunk, headers=part["headers"], timeout=60)
        assert put.status_code == 200, put.text
        parts.append(
            {
                "partNumber": number,
                "etag": put.headers["etag"],
                "sha256": hashlib.sha256(chunk).hexdigest(),
            }
        )
    # The parts' checksums an agent claims when it completes are S3's to check, not taken on trust.
    lying = [parts[0], {**parts[1], "sha256": hashlib.sha256(b"the End").hexdigest()}]
    refused = laptop.post(
        "/api/agent/backup/upload/complete", json={"logId": log_id, "parts": lying}
    )
    assert refused.status_code == 400, refused.text
    assert stored(s3_server, s3_bucket) == {}
    assembled = laptop.post(
        "/api/agent/backup/upload/complete", json={"logId": log_id, "parts": parts}
    )
    assert assembled.status_code == 200, assembled.text
    assert stored(s3_server, s3_bucket) == {path: sum(map(len, chunks))}
