"""The local backend, through real HTTP: a Litestar app with its routes, served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar.datastructures import State

from backend.storage import (
    AccessDenied,
    BadDigest,
    CompletedPart,
    InvalidParts,
    LocalStorage,
    NoSuchUpload,
    ObjectChecksumMismatch,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    ObjectStoreUnavailable,
    crc32_b64,
    local_storage_handlers,
)
from backend.storage.local import Grant, canonical_string
from backend.storage.local_routes import (
    ByteSpan,
    RangeNotSatisfiable,
    byte_span,
    parse_range,
    upload_refusal_status,
)

SECRET = b"local-storage-test-secret"
MIN_PART = 1024  # the S3 rule, scaled down so tests stay small


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class LocalServer:
    storage: LocalStorage
    base_url: str
    root: Path

    def clone(self, clock: Callable[[], float]) -> LocalStorage:
        """Another LocalStorage on the same directory and secret (e.g. with another clock)."""
        return LocalStorage(self.root, self.base_url, SECRET, min_part_size=MIN_PART, clock=clock)


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("local-storage")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    storage = LocalStorage(root, base_url, SECRET, min_part_size=MIN_PART)
    app = Litestar(route_handlers=local_storage_handlers(), state=State({"storage": storage}))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield LocalServer(storage, base_url, root)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def key() -> str:
    return f"users/u1/agents/a1/configs/c1/backup-{uuid.uuid4().hex}.tar.gz"


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["status"] == status
    assert body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


def leftovers(server: LocalServer) -> list[Path]:
    """Files in tmp/ (bodies being received); must be empty between requests."""
    return list((server.root / "tmp").iterdir())


# -- pure builders ---------------------------------------------------------------------------


def test_canonical_string_exact() -> None:
    grant = Grant(
        method="PUT",
        key="users/u1/a b.tar",
        expires=1_700_003_600,
        size=11,
        sha256="ab" * 32,
        upload_id="0" * 32,
        part_number=3,
    )
    assert canonical_string(grant) == (
        "BACKAPP-HMAC-SHA256-V1\n"
        "method:PUT\n"
        "key:users/u1/a b.tar\n"
        "expires:1700003600\n"
        "size:11\n"
        f"sha256:{'ab' * 32}\n"
        f"upload:{'0' * 32}\n"
        "part:3\n"
        "filename:"
    )


def test_presign_put_url_exact(tmp_path: Path) -> None:
    storage = LocalStorage(
        tmp_path, "https://backup.example.com", b"s3cret", clock=lambda: 1_700_000_000.7
    )
    digest = sha(b"hello world")
    request = storage.presign_put(
        "users/u1/ü a+b.tar", expires_in=3600, size=11, sha256=digest.upper()
    )

    signing_key = hmac.new(
        b"s3cret", b"backapp local-storage url signing v1", hashlib.sha256
    ).digest()
    canonical = (
        "BACKAPP-HMAC-SHA256-V1\nmethod:PUT\nkey:users/u1/ü a+b.tar\nexpires:1700003600\n"
        f"size:11\nsha256:{digest}\nupload:\npart:\nfilename:"
    )
    signature = hmac.new(signing_key, canonical.encode(), hashlib.sha256).hexdigest()
    assert request.url == (
        "https://backup.example.com/storage/o/users/u1/%C3%BC%20a%2Bb.tar"
        "?X-Backapp-Method=PUT&X-Backapp-Expires=1700003600&X-Backapp-Size=11"
        f"&X-Backapp-Sha256={digest}&X-Backapp-Signature={signature}"
    )
    assert request.method == "PUT"
    assert request.headers == {}
    assert request.expires_at.isoformat() == "2023-11-14T23:13:20+00:00"


def test_presign_part_and_get_carry_their_constraints(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://h", b"k", clock=lambda: 100.0)
    part = storage.presign_part("a/b", "f" * 32, 7, expires_in=60, size=5, sha256="0" * 64)
    query = dict(parse_qsl(urlsplit(part.url).query))
    assert {k: v for k, v in query.items() if k != "X-Backapp-Signature"} == {
        "X-Backapp-Method": "PUT",
        "X-Backapp-Expires": "160",
        "X-Backapp-Size": "5",
        "X-Backapp-Sha256": "0" * 64,
        "X-Backapp-Upload": "f" * 32,
        "X-Backapp-Part": "7",
    }
    get = storage.presign_get("a/b", expires_in=60, download_name="backup 1.tar")
    assert urlsplit(get.url).path == "/storage/o/a/b"
    assert dict(parse_qsl(urlsplit(get.url).query))["X-Backapp-Filename"] == "backup 1.tar"
    with pytest.raises(ValueError):
        storage.presign_part("a/b", "../../etc", 1, expires_in=60, size=5, sha256="0" * 64)
    with pytest.raises(ValueError):
        storage.presign_part("a/b", "f" * 32, 10_001, expires_in=60, size=5, sha256="0" * 64)
    with pytest.raises(ValueError):
        storage.presign_put("a/b", expires_in=0)
    with pytest.raises(ValueError):
        storage.presign_put("a/b", expires_in=60, sha256="not-hex")
    with pytest.raises(ValueError):
        storage.presign_get("../b", expires_in=60)


def test_verify_round_trip_and_refusals(tmp_path: Path) -> None:
    now = [1000.0]
    storage = LocalStorage(tmp_path, "http://h", b"k", clock=lambda: now[0])
    url = storage.presign_put("a/b", expires_in=60, size=3).url
    query = parse_qsl(urlsplit(url).query)
    assert storage.verify("PUT", "a/b", query) == Grant(
        method="PUT", key="a/b", expires=1060, size=3
    )
    for method, key, params, reason in [
        ("PUT", "a/c", query, "signature"),
        ("GET", "a/b", query, "for PUT"),
        ("PUT", "a/b", [*query, ("X-Backapp-Size", "4")], "twice"),
        ("PUT", "a/b", [(k, "4" if k == "X-Backapp-Size" else v) for k, v in query], "signature"),
        ("PUT", "a/b", [(k, v) for k, v in query if k != "X-Backapp-Size"], "signature"),
        ("PUT", "a/b", [(k, v) for k, v in query if k != "X-Backapp-Signature"], "not signed"),
    ]:
        with pytest.raises(Exception, match=reason) as info:
            storage.verify(method, key, params)
        assert type(info.value).__name__ == "AccessDenied"
    other_secret = LocalStorage(tmp_path, "http://h", b"other", clock=lambda: now[0])
    with pytest.raises(Exception, match="signature"):
        other_secret.verify("PUT", "a/b", query)
    now[0] = 1060.0
    with pytest.raises(Exception, match="expired"):
        storage.verify("PUT", "a/b", query)


def test_parse_range_exact() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-5", 10) == (2, 5)
    assert parse_range("bytes=2-", 10) == (2, 9)
    assert parse_range("bytes=2-100", 10) == (2, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=9-9", 10) == (9, 9)
    # Ignored (whole object): other units, several ranges, malformed.
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=0-1,3-4", 10) is None
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("bytes=-", 10) is None
    for header, size in [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0)]:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)


def test_byte_span_exact() -> None:
    assert byte_span(None, 10) == ByteSpan(
        status=200, first=0, length=10, headers={"accept-ranges": "bytes", "content-length": "10"}
    )
    assert byte_span("bytes=-3", 10) == ByteSpan(
        status=206,
        first=7,
        length=3,
        headers={
            "accept-ranges": "bytes",
            "content-range": "bytes 7-9/10",
            "content-length": "3",
        },
    )
    with pytest.raises(RangeNotSatisfiable):
        byte_span("bytes=10-", 10)


def test_upload_refusal_status() -> None:
    """A body the storage refuses is a 4xx (sending it again changes nothing); a failing storage
    is a 503 (worth a retry)."""
    assert upload_refusal_status(AccessDenied("x")) == 403
    assert upload_refusal_status(BadDigest("x")) == 400
    assert upload_refusal_status(NoSuchUpload("x")) == 404
    assert upload_refusal_status(ObjectExists("x")) == 409
    assert upload_refusal_status(ObjectStoreUnavailable("x")) == 503
    assert upload_refusal_status(ObjectStoreError("x")) == 503
    assert upload_refusal_status(OSError("disk full")) == 503


# -- single uploads over HTTP ----------------------------------------------------------------


async def test_put_head_get(local_server: LocalServer, http: httpx.AsyncClient, key: str) -> None:
    # Over Litestar's default 10 MB request limit, and many 1 MiB write batches.
    body = os.urandom(10 * 1024 * 1024 + 17)
    storage = local_server.storage
    put = storage.presign_put(key, expires_in=60, size=len(body), sha256=sha(body))
    response = await http.put(put.url, content=body, headers=put.headers)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{sha(body)}"'

    assert await storage.head(key) == ObjectInfo(size=len(body), sha256=sha(body))
    assert (local_server.root / "objects" / key).read_bytes() == body
    assert leftovers(local_server) == []

    get = storage.presign_get(key, expires_in=60, download_name="backup.tar.gz")
    response = await http.get(get.url)
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["content-disposition"] == 'attachment; filename="backup.tar.gz"'
    assert response.headers["accept-ranges"] == "bytes"

    response = await http.head(get.url)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(body))
    assert response.content == b""


async def test_put_without_constraints_streams_any_body(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 300_000

    put = local_server.storage.presign_put(key, expires_in=60)
    response = await http.put(put.url, content=body())  # chunked: no length known up front
    assert response.status_code == 200, response.text
    expected = b"".join(bytes([i]) * 300_000 for i in range(5))
    assert await local_server.storage.head(key) == ObjectInfo(len(expected), sha(expected))


async def test_odd_characters_in_key(local_server: LocalServer, http: httpx.AsyncClient) -> None:
    key = f"users/ü {uuid.uuid4().hex}/a+b%41 #?.tar"
    put = local_server.storage.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"x")).status_code == 200
    assert (await local_server.storage.head(key)) == ObjectInfo(1, sha(b"x"))
    response = await http.get(local_server.storage.presign_get(key, expires_in=60).url)
    assert response.content == b"x"


async def test_range_get(local_server: LocalServer, http: httpx.AsyncClient, key: str) -> None:
    body = bytes(range(256)) * 4
    put = local_server.storage.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=body)).status_code == 200
    url = local_server.storage.presign_get(key, expires_in=60).url

    response = await http.get(url, headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == body[10:20]
    assert response.headers["content-range"] == f"bytes 10-19/{len(body)}"
    assert response.headers["content-length"] == "10"

    response = await http.get(url, headers={"Range": "bytes=1000-"})
    assert response.status_code == 206
    assert response.content == body[1000:]
    assert response.headers["content-range"] == f"bytes 1000-1023/{len(body)}"

    response = await http.get(url, headers={"Range": f"bytes={len(body)}-"})
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(body)}"


async def test_get_missing_object(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    response = await http.get(local_server.storage.presign_get(key, expires_in=60).url)
    assert_error(response, 404, "not_found")


# -- what a URL does not allow ---------------------------------------------------------------


async def test_url_is_scoped_to_its_key(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    put = local_server.storage.presign_put(key, expires_in=60)
    other = key + ".other"
    url = put.url.replace(key.rsplit("/", 1)[1], other.rsplit("/", 1)[1])
    assert url != put.url
    response = await http.put(url, content=b"x")
    assert_error(response, 403, "forbidden")
    assert await local_server.storage.head(other) is None


async def test_get_url_cannot_put_and_put_url_cannot_get(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    assert_error(
        await http.put(storage.presign_get(key, expires_in=60).url, content=b"x"), 403, "forbidden"
    )
    put = storage.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"x")).status_code == 200
    assert_error(await http.get(put.url), 403, "forbidden")


async def test_expired_url_refused(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    signed_earlier = local_server.clone(clock=lambda: time.time() - 7200)
    put = signed_earlier.presign_put(key, expires_in=3600)
    response = await http.put(put.url, content=b"x")
    assert_error(response, 403, "forbidden")
    assert "expired" in response.json()["detail"]
    assert await local_server.storage.head(key) is None


@pytest.mark.parametrize(
    "change",
    [
        {"X-Backapp-Signature": "0" * 64},
        {"X-Backapp-Expires": "99999999999"},
        {"X-Backapp-Size": "2"},
        {"X-Backapp-Method": "GET"},
    ],
)
async def test_tampered_url_refused(
    local_server: LocalServer, http: httpx.AsyncClient, key: str, change: dict[str, str]
) -> None:
    put = local_server.storage.presign_put(key, expires_in=60, size=1)
    response = await http.put(with_query(put.url, **change), content=b"x")
    assert_error(response, 403, "forbidden")
    assert await local_server.storage.head(key) is None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"hello worlx", "SHA-256"),  # right size, wrong content
        (b"hello world!", "longer"),
        (b"hello", "bytes"),
    ],
)
async def test_body_not_matching_signed_size_or_sha256_is_refused(
    local_server: LocalServer, http: httpx.AsyncClient, key: str, body: bytes, why: str
) -> None:
    expected = b"hello world"
    put = local_server.storage.presign_put(
        key, expires_in=60, size=len(expected), sha256=sha(expected)
    )
    response = await http.put(put.url, content=body)
    assert_error(response, 400, "bad_request")
    assert why in response.json()["detail"]
    assert await local_server.storage.head(key) is None
    assert not (local_server.root / "objects" / key).exists()
    assert leftovers(local_server) == []


async def test_no_overwrite(local_server: LocalServer, http: httpx.AsyncClient, key: str) -> None:
    storage = local_server.storage
    assert (
        await http.put(storage.presign_put(key, expires_in=60).url, content=b"first")
    ).status_code == 200
    for _ in range(2):  # a fresh URL, and the same URL again
        response = await http.put(storage.presign_put(key, expires_in=60).url, content=b"second")
        assert_error(response, 409, "conflict")
    assert (local_server.root / "objects" / key).read_bytes() == b"first"
    assert await storage.head(key) == ObjectInfo(5, sha(b"first"))
    assert leftovers(local_server) == []


async def test_racing_puts_exactly_one_wins(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    bodies = [os.urandom(2 * 1024 * 1024), os.urandom(2 * 1024 * 1024)]
    responses = await asyncio.gather(
        *(http.put(storage.presign_put(key, expires_in=60).url, content=b) for b in bodies)
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = bodies[[r.status_code for r in responses].index(200)]
    assert (local_server.root / "objects" / key).read_bytes() == winner
    assert await storage.head(key) == ObjectInfo(len(winner), sha(winner))


async def test_head_rehashes_when_sidecar_is_lost(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    assert (
        await http.put(storage.presign_put(key, expires_in=60).url, content=b"abc")
    ).status_code == 200
    (local_server.root / "meta" / key).unlink()
    assert await storage.head(key) == ObjectInfo(3, sha(b"abc"))
    assert json.loads((local_server.root / "meta" / key).read_text()) == {
        "size": 3,
        "sha256": sha(b"abc"),
    }


async def test_delete(local_server: LocalServer, http: httpx.AsyncClient, key: str) -> None:
    storage = local_server.storage
    assert (
        await http.put(storage.presign_put(key, expires_in=60).url, content=b"abc")
    ).status_code == 200
    await storage.delete(key)
    assert await storage.head(key) is None
    await storage.delete(key)  # deleting a missing object is fine
    # The key is free again (retention deleted the old backup).
    assert (
        await http.put(storage.presign_put(key, expires_in=60).url, content=b"new")
    ).status_code == 200


async def test_check(local_server: LocalServer, tmp_path: Path) -> None:
    await local_server.storage.check()
    storage = LocalStorage(tmp_path / "s", "http://h", SECRET)
    (tmp_path / "s" / "tmp").rmdir()
    with pytest.raises(Exception, match="missing") as info:
        await storage.check()
    assert type(info.value).__name__ == "ObjectStoreUnavailable"


# -- multipart -------------------------------------------------------------------------------


async def put_part(
    http: httpx.AsyncClient,
    storage: LocalStorage,
    key: str,
    upload_id: str,
    number: int,
    data: bytes,
) -> httpx.Response:
    request = storage.presign_part(
        key, upload_id, number, expires_in=60, size=len(data), sha256=sha(data)
    )
    return await http.put(request.url, content=data, headers=request.headers)


async def upload_parts(
    http: httpx.AsyncClient, storage: LocalStorage, key: str, upload_id: str, datas: list[bytes]
) -> list[CompletedPart]:
    parts = []
    for number, data in enumerate(datas, start=1):
        response = await put_part(http, storage, key, upload_id, number, data)
        assert response.status_code == 200, response.text
        parts.append(CompletedPart(number, response.headers["etag"], sha(data)))
    return parts


async def test_multipart_round_trip(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    datas = [os.urandom(MIN_PART), os.urandom(MIN_PART + 5), b"tail"]
    upload_id = await storage.create_multipart(key)
    parts = await upload_parts(http, storage, key, upload_id, datas)
    whole = b"".join(datas)

    info = await storage.complete_multipart(key, upload_id, parts)
    assert info == ObjectInfo(size=len(whole), sha256=sha(whole))
    assert await storage.head(key) == info
    response = await http.get(storage.presign_get(key, expires_in=60).url)
    assert response.content == whole
    assert not (local_server.root / "uploads" / upload_id).exists()
    assert leftovers(local_server) == []
    with pytest.raises(NoSuchUpload):  # completed: the upload is gone
        await storage.complete_multipart(key, upload_id, parts)


async def test_resent_part_replaces_the_earlier_one(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    first, second = os.urandom(MIN_PART), os.urandom(MIN_PART)
    parts = await upload_parts(http, storage, key, upload_id, [first, b"old"])
    # The same part again (a retry), then a different body for part 2 with a fresh URL.
    assert (await put_part(http, storage, key, upload_id, 2, b"old")).status_code == 200
    response = await put_part(http, storage, key, upload_id, 2, second)
    assert response.status_code == 200
    with pytest.raises(InvalidParts, match="content"):
        await storage.complete_multipart(key, upload_id, parts)  # still names the old part 2
    assert await storage.head(key) is None
    parts[1] = CompletedPart(2, response.headers["etag"], sha(second))
    assert await storage.complete_multipart(key, upload_id, parts) == ObjectInfo(
        2 * MIN_PART, sha(first + second)
    )


async def test_part_body_must_match_signed_sha256(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    request = storage.presign_part(key, upload_id, 1, expires_in=60, size=3, sha256=sha(b"abc"))
    response = await http.put(request.url, content=b"abd")
    assert_error(response, 400, "bad_request")
    assert sorted(p.name for p in (local_server.root / "uploads" / upload_id).iterdir()) == [
        "upload.json"
    ]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda ps: [ps[1], ps[0], ps[2]], "ascending"),
        (lambda ps: [ps[0], ps[0], ps[2]], "ascending"),
        (lambda ps: [ps[0], CompletedPart(2, '"' + "0" * 64 + '"', ps[1].sha256), ps[2]], "ETag"),
        (lambda ps: [ps[0], ps[1], CompletedPart(4, ps[2].etag, ps[2].sha256)], "not uploaded"),
        (lambda ps: [], "no parts"),
        (lambda ps: [CompletedPart(1, ps[0].etag, "xyz"), *ps[1:]], "hex"),
    ],
)
async def test_complete_refuses_bad_part_lists(
    local_server: LocalServer,
    http: httpx.AsyncClient,
    key: str,
    mutate: Callable[[list[CompletedPart]], list[CompletedPart]],
    match: str,
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    datas = [os.urandom(MIN_PART), os.urandom(MIN_PART), os.urandom(4)]
    parts = await upload_parts(http, storage, key, upload_id, datas)
    parts = mutate(parts)
    with pytest.raises(InvalidParts, match=match):
        await storage.complete_multipart(key, upload_id, parts)
    assert await storage.head(key) is None
    assert leftovers(local_server) == []


async def test_parts_but_the_last_have_a_minimum_size(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    parts = await upload_parts(http, storage, key, upload_id, [b"tiny", os.urandom(MIN_PART)])
    with pytest.raises(InvalidParts, match="at least 1024 bytes"):
        await storage.complete_multipart(key, upload_id, parts)
    assert await storage.head(key) is None


async def test_min_part_size_defaults_to_s3s(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://h", SECRET)
    assert storage.min_part_size == 5 * 1024 * 1024
    upload_id = await storage.create_multipart("k")

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    parts = []
    for number, data in enumerate([b"a" * 100, b"b"], start=1):
        request = storage.presign_part(
            "k", upload_id, number, expires_in=60, size=len(data), sha256=sha(data)
        )
        grant = storage.verify("PUT", "k", parse_qsl(urlsplit(request.url).query))
        etag = await storage.receive(grant, chunks(data))
        parts.append(CompletedPart(number, etag, sha(data)))
    with pytest.raises(InvalidParts, match="5242880"):
        await storage.complete_multipart("k", upload_id, parts)
    # A single part may be any size (it is the last one).
    assert await storage.complete_multipart("k", upload_id, parts[:1]) == ObjectInfo(
        100, sha(b"a" * 100)
    )


async def test_complete_never_overwrites(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    parts = await upload_parts(http, storage, key, upload_id, [b"multipart"])
    assert (
        await http.put(storage.presign_put(key, expires_in=60).url, content=b"single")
    ).status_code == 200
    with pytest.raises(ObjectExists):
        await storage.complete_multipart(key, upload_id, parts)
    assert (local_server.root / "objects" / key).read_bytes() == b"single"
    assert leftovers(local_server) == []
    await storage.abort_multipart(key, upload_id)


async def test_abort(local_server: LocalServer, http: httpx.AsyncClient, key: str) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    parts = await upload_parts(http, storage, key, upload_id, [b"abc"])
    await storage.abort_multipart(key, upload_id)
    assert not (local_server.root / "uploads" / upload_id).exists()
    response = await put_part(http, storage, key, upload_id, 2, b"late")
    assert_error(response, 404, "not_found")
    with pytest.raises(NoSuchUpload):
        await storage.complete_multipart(key, upload_id, parts)
    with pytest.raises(NoSuchUpload):
        await storage.abort_multipart(key, upload_id)


@pytest.mark.parametrize("upload_id", ["0" * 32, "../../objects", "ABC"])
async def test_unknown_upload(local_server: LocalServer, key: str, upload_id: str) -> None:
    storage = local_server.storage
    with pytest.raises(NoSuchUpload):
        await storage.complete_multipart(key, upload_id, [CompletedPart(1, '"x"', "0" * 64)])
    with pytest.raises(NoSuchUpload):
        await storage.abort_multipart(key, upload_id)


async def test_upload_belongs_to_its_key(local_server: LocalServer, key: str) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    with pytest.raises(NoSuchUpload):
        await storage.abort_multipart(key + ".other", upload_id)
    await storage.abort_multipart(key, upload_id)


# -- multipart with CRC32 parts ----------------------------------------------------------------


def crc(data: bytes) -> str:
    return crc32_b64(zlib.crc32(data))


async def upload_crc32_parts(
    http: httpx.AsyncClient, storage: LocalStorage, key: str, upload_id: str, datas: list[bytes]
) -> list[CompletedPart]:
    parts = []
    for number, data in enumerate(datas, start=1):
        request = storage.presign_part(
            key, upload_id, number, expires_in=60, size=len(data), crc32=crc(data)
        )
        response = await http.put(request.url, content=data, headers=request.headers)
        assert response.status_code == 200, response.text
        parts.append(CompletedPart(number, response.headers["etag"], crc32=crc(data)))
    return parts


def test_crc32_part_url_signs_the_crc32(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://h", b"k", clock=lambda: 100.0)
    part = storage.presign_part("a/b", "f" * 32, 7, expires_in=60, size=5, crc32="NhCmhg==")
    query = parse_qsl(urlsplit(part.url).query)
    assert {k: v for k, v in query if k != "X-Backapp-Signature"} == {
        "X-Backapp-Method": "PUT",
        "X-Backapp-Expires": "160",
        "X-Backapp-Size": "5",
        "X-Backapp-Crc32": "NhCmhg==",
        "X-Backapp-Upload": "f" * 32,
        "X-Backapp-Part": "7",
    }
    grant = storage.verify("PUT", "a/b", query)
    assert grant.crc32 == "NhCmhg==" and grant.sha256 is None
    assert canonical_string(grant).endswith("\nfilename:\ncrc32:NhCmhg==")
    # Another CRC32, or none at all, breaks the signature.
    for params in (
        [(k, "AAAAAA==" if k == "X-Backapp-Crc32" else v) for k, v in query],
        [(k, v) for k, v in query if k != "X-Backapp-Crc32"],
    ):
        with pytest.raises(Exception, match="signature"):
            storage.verify("PUT", "a/b", params)
    for bad in ({}, {"sha256": "0" * 64, "crc32": "NhCmhg=="}, {"crc32": "NhCmhg"}):
        with pytest.raises(ValueError):
            storage.presign_part("a/b", "f" * 32, 7, expires_in=60, size=5, **bad)  # type: ignore[arg-type]


async def test_multipart_round_trip_with_crc32_parts(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    datas = [os.urandom(MIN_PART), os.urandom(MIN_PART + 5), b"tail"]
    upload_id = await storage.create_multipart(key, checksum="crc32")
    manifest = json.loads((local_server.root / "uploads" / upload_id / "upload.json").read_text())
    assert manifest["checksum"] == "crc32"
    parts = await upload_crc32_parts(http, storage, key, upload_id, datas)
    assert parts[2].etag == f'"{zlib.crc32(b"tail"):08x}"'
    whole = b"".join(datas)
    info = await storage.complete_multipart(key, upload_id, parts)
    # The whole SHA-256 as ever, and the whole object's CRC32 (S3's full-object checksum).
    assert info == ObjectInfo(size=len(whole), sha256=sha(whole), crc32=crc(whole))
    response = await http.get(storage.presign_get(key, expires_in=60).url)
    assert response.content == whole
    assert leftovers(local_server) == []


async def test_complete_checks_the_whole_objects_crc32(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    """The CRC32 the client computed over the whole stream is checked against what is assembled:
    a part list that makes another object (here: the parts of another upload's order) is refused
    and nothing is published."""
    storage = local_server.storage
    datas = [os.urandom(MIN_PART), os.urandom(MIN_PART), b"tail"]
    upload_id = await storage.create_multipart(key, checksum="crc32")
    parts = await upload_crc32_parts(http, storage, key, upload_id, datas)
    swapped = b"".join([datas[1], datas[0], datas[2]])
    with pytest.raises(ObjectChecksumMismatch, match="CRC32"):
        await storage.complete_multipart(key, upload_id, parts, object_crc32=crc(swapped))
    assert await storage.head(key) is None
    assert leftovers(local_server) == []
    whole = b"".join(datas)
    info = await storage.complete_multipart(key, upload_id, parts, object_crc32=crc(whole))
    assert info.crc32 == crc(whole) and info.sha256 == sha(whole)


async def test_corrupted_crc32_part_is_refused(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key, checksum="crc32")
    request = storage.presign_part(key, upload_id, 1, expires_in=60, size=5, crc32=crc(b"hello"))
    response = await http.put(request.url, content=b"hellx", headers=request.headers)
    assert_error(response, 400, "bad_request")
    assert "CRC32" in response.json()["detail"]
    assert sorted(p.name for p in (local_server.root / "uploads" / upload_id).iterdir()) == [
        "upload.json"
    ]
    assert leftovers(local_server) == []


async def test_part_urls_must_carry_the_uploads_checksum(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    crc_upload = await storage.create_multipart(key, checksum="crc32")
    sha_upload = await storage.create_multipart(key)
    wrong = [
        storage.presign_part(key, crc_upload, 1, expires_in=60, size=5, sha256=sha(b"hello")),
        storage.presign_part(key, sha_upload, 1, expires_in=60, size=5, crc32=crc(b"hello")),
    ]
    for request in wrong:
        response = await http.put(request.url, content=b"hello")
        assert_error(response, 403, "forbidden")
    # A single PUT never carries a CRC32.
    grant = Grant(method="PUT", key=key, expires=int(time.time()) + 60, crc32=crc(b"hello"))
    response = await http.put(storage.url_for(grant), content=b"hello")
    assert_error(response, 403, "forbidden")
    assert await storage.head(key) is None


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda ps: [ps[0], CompletedPart(2, ps[1].etag, sha(b"x"))], "carry crc32"),
        (lambda ps: [ps[0], CompletedPart(2, ps[1].etag, crc32=crc(b"x"))], "ETag"),
        (lambda ps: [ps[0], CompletedPart(2, ps[1].etag, crc32="AAAA")], "base64"),
        (lambda ps: [ps[0], CompletedPart(2, '"00000000"', crc32="AAAAAA==")], "content"),
    ],
)
async def test_complete_refuses_bad_crc32_part_lists(
    local_server: LocalServer,
    http: httpx.AsyncClient,
    key: str,
    mutate: Callable[[list[CompletedPart]], list[CompletedPart]],
    match: str,
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key, checksum="crc32")
    parts = await upload_crc32_parts(http, storage, key, upload_id, [os.urandom(MIN_PART), b"z"])
    with pytest.raises(InvalidParts, match=match):
        await storage.complete_multipart(key, upload_id, mutate(parts))
    assert await storage.head(key) is None
    assert leftovers(local_server) == []


async def test_sha256_upload_refuses_crc32_parts_at_complete(
    local_server: LocalServer, http: httpx.AsyncClient, key: str
) -> None:
    storage = local_server.storage
    upload_id = await storage.create_multipart(key)
    parts = await upload_parts(http, storage, key, upload_id, [b"only"])
    with pytest.raises(InvalidParts, match="carry sha256"):
        await storage.complete_multipart(
            key, upload_id, [CompletedPart(1, parts[0].etag, crc32=crc(b"only"))]
        )
