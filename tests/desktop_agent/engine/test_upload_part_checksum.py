"""The uploader's part checksum (a unit test of the uploader seam: the plane and storage are fakes
that record what they are given): CRC32 parts for a server that advertises ``part-crc32``, SHA-256
parts otherwise, and what ``ApiClient`` sends for each."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import msgspec
import pytest

from desktop_agent.engine import ApiClient
from desktop_agent.engine._parts import crc32_b64
from desktop_agent.engine._upload import Uploader, UploadOptions
from desktop_agent.engine.protocol import (
    Body,
    CompleteUpload,
    PartTicket,
    SignPart,
    StartBackup,
    StartResponse,
    UploadedPart,
    UploadTicket,
)

KIB = 1024


def sent(message: Any) -> dict[str, Any]:
    """The fields of a plane message that carry a value (``None``: not sent)."""
    return {k: v for k, v in dataclasses.asdict(message).items() if v is not None}


def crc(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class Plane:
    def __init__(self, features: frozenset[str] | None, answer: str | None) -> None:
        if features is not None:
            self.server_features = features
        self.answer = answer
        self.starts: list[dict[str, Any]] = []
        self.part_requests: list[dict[str, Any]] = []
        self.completed: list[UploadedPart] = []
        self.object_crc32: str | None = None

    def start_backup(self, request: StartBackup) -> StartResponse:
        self.starts.append(sent(request))
        ticket = UploadTicket(
            method="MULTIPART", s3_path="k", upload_id="u", part_checksum=self.answer
        )
        return StartResponse(log_id="log-1", upload=ticket)

    def part_url(self, request: SignPart) -> PartTicket:
        kw = sent(request)
        self.part_requests.append(kw)
        return PartTicket(part_number=kw["part_number"], url=f"https://s/{kw['part_number']}")

    def complete_upload(self, request: CompleteUpload) -> int:
        self.completed = list(request.parts)
        self.object_crc32 = request.crc32
        self.part_requests.sort(key=lambda r: int(r["part_number"]))  # they went up concurrently
        return sum(r["size"] for r in self.part_requests)


class Storage:
    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}

    def put(self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]) -> str:
        assert isinstance(body, bytes | bytearray | memoryview)
        self.bodies[url] = bytes(body)  # copied now: the uploader reuses its part buffers
        return f'"etag-{url.rsplit("/", 1)[1]}"'


def upload(plane: Plane, data: bytes, **options: Any) -> Storage:
    storage = Storage()
    uploader = Uploader(
        plane,  # type: ignore[arg-type]
        storage,
        config_id="c",
        filename="backup.tar.zst",
        estimated_size=len(data),
        options=UploadOptions(
            multipart_threshold=64 * KIB, part_size=100 * KIB, concurrency=2, **options
        ),
    )
    for i in range(0, len(data), 7 * KIB):
        uploader.write(data[i : i + 7 * KIB])
    result = uploader.finish()
    assert result.multipart and result.sha256 == hashlib.sha256(data).hexdigest()
    return storage


DATA = os.urandom(350 * KIB)
PIECES = [DATA[i : i + 100 * KIB] for i in range(0, len(DATA), 100 * KIB)]


def test_crc32_parts_when_the_server_advertises_them() -> None:
    plane = Plane(frozenset({"part-crc32", "progress-by-config"}), "crc32")
    storage = upload(plane, DATA)
    assert plane.starts[0]["part_checksum"] == "crc32"
    assert [r["crc32"] for r in plane.part_requests] == [crc(p) for p in PIECES]
    assert all("sha256" not in r for r in plane.part_requests)
    assert [storage.bodies[f"https://s/{n}"] for n in (1, 2, 3, 4)] == PIECES
    assert plane.completed == [
        UploadedPart(n, f'"etag-{n}"', crc32=crc(p)) for n, p in enumerate(PIECES, start=1)
    ]
    assert msgspec.to_builtins(plane.completed[0]) == {
        "partNumber": 1,
        "etag": '"etag-1"',
        "crc32": crc(PIECES[0]),
    }
    # The whole archive's CRC32, computed from the stream with its SHA-256, for storage to check
    # against the object it assembles.
    assert plane.object_crc32 == crc(DATA)


@pytest.mark.parametrize(
    ("features", "answer", "options", "asked"),
    [
        (None, None, {}, False),  # a plane that knows nothing of features
        (frozenset(), None, {}, False),  # a server from before part-crc32
        (frozenset({"part-crc32"}), None, {}, True),  # ... that answers as an older one
        (frozenset({"part-crc32"}), "sha256", {}, True),
        (frozenset({"part-crc32"}), "crc32", {"part_checksum": "sha256"}, False),
    ],
)
def test_sha256_parts_otherwise(
    features: frozenset[str] | None, answer: str | None, options: dict[str, Any], asked: bool
) -> None:
    plane = Plane(features, answer)
    upload(plane, DATA, **options)
    assert ("part_checksum" in plane.starts[0]) is asked
    expected = [hashlib.sha256(p).hexdigest() for p in PIECES]
    assert [r["sha256"] for r in plane.part_requests] == expected
    assert all("crc32" not in r for r in plane.part_requests)
    assert [p.sha256 for p in plane.completed] == expected
    assert all(p.crc32 is None for p in plane.completed)
    assert plane.object_crc32 is None


def test_crc32_b64_accepts_every_buffer() -> None:
    assert crc32_b64(b"hello") == crc32_b64(bytearray(b"hello")) == "NhCmhg=="
    assert crc32_b64(memoryview(b"xhellox")[1:6]) == "NhCmhg=="


def test_api_client_remembers_features_and_sends_the_part_checksum() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        seen.append((request.url.path, body))
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(200, json={"status": "online", "features": ["part-crc32"]})
        if request.url.path.endswith("/start"):
            upload = {"method": "MULTIPART", "s3Path": "k", "partChecksum": "crc32"}
            return httpx.Response(200, json={"logId": "l", "upload": upload})
        return httpx.Response(200, json={"part": {"partNumber": 1, "url": "https://s/1"}})

    client = ApiClient("https://b.test", "key", transport=httpx.MockTransport(handler))
    assert client.server_features is None
    client.heartbeat(version="1", platform="linux")
    assert client.server_features == frozenset({"part-crc32"})
    started = client.start_backup(
        StartBackup(config_id="c", filename="f", filesize=1, multipart=True, part_checksum="crc32")
    )
    assert started.upload.part_checksum == "crc32"
    client.part_url(SignPart(log_id="l", part_number=1, size=5, crc32="NhCmhg=="))
    client.part_url(SignPart(log_id="l", part_number=2, size=5, sha256="ab" * 32))
    client.start_backup(StartBackup(config_id="c", filename="f", filesize=1, multipart=True))
    assert seen[1][1]["partChecksum"] == "crc32"
    assert seen[2][1] == {"logId": "l", "partNumber": 1, "size": 5, "crc32": "NhCmhg=="}
    assert seen[3][1] == {"logId": "l", "partNumber": 2, "size": 5, "sha256": "ab" * 32}
    assert "partChecksum" not in seen[4][1]
    client.complete_upload(
        CompleteUpload(log_id="l", parts=[UploadedPart(1, '"e"', crc32="NhCmhg==")])
    )
    client.complete_upload(
        CompleteUpload(
            log_id="l", parts=[UploadedPart(1, '"e"', crc32="NhCmhg==")], crc32="NhCmhg=="
        )
    )
    assert seen[5][1] == {
        "logId": "l",
        "parts": [{"partNumber": 1, "etag": '"e"', "crc32": "NhCmhg=="}],
    }
    assert seen[6][1]["objectCrc32"] == "NhCmhg=="
    client.close()
