"""The S3 backend against real S3 endpoints on loopback, through real HTTP: every test that talks to S3
runs on moto (server mode) and on SeaweedFS.

SeaweedFS checks what real S3 checks of a pre-signed request (signature, expiry, signed headers,
checksums against the body, ``If-None-Match``), so the URL-scope tests run there for real. moto 5
accepts any pre-signed URL without checking its signature or expiry, nor a checksum against the body:
on moto those tests are marked ``xfail`` (not strict: moto releases differ), and what a URL is scoped
to is also checked with an independent SigV4 verifier (``presigned_url_is_valid``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from backend.storage import (
    MIN_PART_SIZE,
    CompletedPart,
    InvalidParts,
    NoSuchUpload,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    ObjectStoreUnavailable,
    S3Storage,
    crc32_b64,
)
from backend.storage.s3 import _translate, object_info_from_head
from tests.support.ports import free_port
from tests.support.s3 import ON_BOTH, ON_SEAWEEDFS, S3Endpoint, presigned_url_is_valid


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture(params=ON_BOTH)
def s3_server(request: pytest.FixtureRequest) -> S3Endpoint:
    """Every test here that talks to S3 runs on moto and on SeaweedFS (unless it says otherwise)."""
    endpoint: S3Endpoint = request.getfixturevalue(f"{request.param}_server")
    return endpoint


def unchecked_by_moto(reason: str) -> pytest.MarkDecorator:
    """Run on both servers, ``xfail`` on moto only: moto 5 does not check ``reason``."""
    return pytest.mark.parametrize(
        "s3_server",
        [
            pytest.param("moto", marks=pytest.mark.xfail(strict=False, reason=f"moto 5: {reason}")),
            "seaweedfs",
        ],
        indirect=True,
    )


on_seaweedfs = pytest.mark.parametrize("s3_server", ON_SEAWEEDFS, indirect=True)
"""What only a server that checks signatures can show (moto accepts any pre-signed URL)."""

signing_only = pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
"""Presigning is local computation: one server is enough (the bucket only has to exist)."""


@pytest.fixture
def s3(s3_server: S3Endpoint, s3_bucket: str) -> S3Storage:
    return S3Storage(
        s3_bucket,
        s3_server.region,
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture
def key() -> str:
    return f"users/u1/agents/a1/configs/c1/backup-{uuid.uuid4().hex}.tar.gz"


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


# -- pure parts ------------------------------------------------------------------------------


@signing_only
def test_presign_put_signs_every_constraint(s3: S3Storage, key: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    request = s3.presign_put(key, expires_in=900, size=11, sha256=sha(b"hello world"))
    after = datetime.now(UTC)

    assert request.method == "PUT"
    assert request.headers == {
        "content-length": "11",
        "x-amz-checksum-sha256": b64sha(b"hello world"),
        "x-amz-sdk-checksum-algorithm": "SHA256",
        "if-none-match": "*",
    }
    parts = urlsplit(request.url)
    assert parts.path == f"/{s3.bucket}/{key}"
    query = query_of(request.url)
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-SignedHeaders"] == (
        "content-length;host;if-none-match;x-amz-checksum-sha256;x-amz-sdk-checksum-algorithm"
    )
    # No surprise checksum parameters from botocore >= 1.36.
    assert not [name for name in query if "checksum" in name.lower()]
    assert before + timedelta(seconds=900) <= request.expires_at <= after + timedelta(seconds=900)
    assert request.expires_at.tzinfo is not None


@signing_only
def test_presign_get_and_part(s3: S3Storage, key: str) -> None:
    get = s3.presign_get(key, expires_in=60, download_name="backup 1.tar.gz")
    assert get.method == "GET" and get.headers == {}
    assert (
        query_of(get.url)["response-content-disposition"]
        == 'attachment; filename="backup 1.tar.gz"'
    )
    assert query_of(get.url)["X-Amz-SignedHeaders"] == "host"

    part = s3.presign_part(key, "upload-1", 3, expires_in=60, size=5, sha256=sha(b"hello"))
    assert part.headers == {"content-length": "5", "x-amz-checksum-sha256": b64sha(b"hello")}
    query = query_of(part.url)
    assert (query["uploadId"], query["partNumber"]) == ("upload-1", "3")
    assert query["X-Amz-SignedHeaders"] == "content-length;host;x-amz-checksum-sha256"


@signing_only
def test_presign_refuses_bad_input(s3: S3Storage) -> None:
    calls: list[Callable[[], object]] = [
        lambda: s3.presign_put("../x", expires_in=60),
        lambda: s3.presign_put("a", expires_in=0),
        lambda: s3.presign_put("a", expires_in=8 * 24 * 3600),
        lambda: s3.presign_put("a", expires_in=60, sha256="zz"),
        lambda: s3.presign_get("/abs", expires_in=60),
        lambda: s3.presign_part("a", "u", 0, expires_in=60, size=1, sha256="0" * 64),
        lambda: s3.presign_part("a", "u", 10_001, expires_in=60, size=1, sha256="0" * 64),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


@signing_only
def test_presigned_urls_are_scoped(s3: S3Storage, s3_server: S3Endpoint, key: str) -> None:
    """What S3 checks of the URLs (moto does not): method, exact key, signed headers, expiry."""
    secret = s3_server.secret_access_key
    put = s3.presign_put(key, expires_in=900, size=11, sha256=sha(b"hello world"))

    def valid(
        url: str = put.url,
        method: str = "PUT",
        headers: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> bool:
        return presigned_url_is_valid(
            url,
            method,
            put.headers if headers is None else headers,
            secret_access_key=secret,
            now=now,
        )

    assert valid()
    assert not valid(put.url.replace(key, key + "x"))  # another key
    assert not valid(method="GET")
    assert not valid(put.url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert not valid(headers={**put.headers, "content-length": "12"})
    assert not valid(headers={**put.headers, "x-amz-checksum-sha256": b64sha(b"other")})
    without_condition = {k: v for k, v in put.headers.items() if k != "if-none-match"}
    assert not valid(headers=without_condition)
    assert not valid(now=put.expires_at + timedelta(seconds=2))
    assert not valid(put.url.replace("X-Amz-Expires=900", "X-Amz-Expires=9000"))
    assert not presigned_url_is_valid(put.url, "PUT", put.headers, secret_access_key="other")

    get = s3.presign_get(key, expires_in=60)
    assert presigned_url_is_valid(get.url, "GET", {}, secret_access_key=secret)
    assert not presigned_url_is_valid(get.url, "PUT", {}, secret_access_key=secret)

    part = s3.presign_part(key, "upload-1", 2, expires_in=60, size=5, sha256=sha(b"hello"))
    assert presigned_url_is_valid(part.url, "PUT", part.headers, secret_access_key=secret)
    assert not presigned_url_is_valid(
        part.url.replace("partNumber=2", "partNumber=3"),
        "PUT",
        part.headers,
        secret_access_key=secret,
    )
    assert not presigned_url_is_valid(
        part.url.replace("uploadId=upload-1", "uploadId=upload-2"),
        "PUT",
        part.headers,
        secret_access_key=secret,
    )


def test_object_info_from_head() -> None:
    full = b64sha(b"x")
    assert object_info_from_head({"ContentLength": 1, "ETag": '"abc"'}) == ObjectInfo(1, None, None)
    assert object_info_from_head(
        {"ContentLength": 1, "ETag": '"abc"', "ChecksumSHA256": full, "ChecksumType": "FULL_OBJECT"}
    ) == ObjectInfo(1, sha(b"x"), full)
    # Real S3 marks multipart checksums as composite two ways; moto only by the multipart ETag.
    assert object_info_from_head(
        {
            "ContentLength": 9,
            "ETag": '"abc-3"',
            "ChecksumSHA256": full + "-3",
            "ChecksumType": "COMPOSITE",
        }
    ) == ObjectInfo(9, None, full + "-3")
    assert object_info_from_head(
        {"ContentLength": 9, "ETag": '"abc"', "ChecksumSHA256": full, "ChecksumType": "COMPOSITE"}
    ) == ObjectInfo(9, None, full)
    assert object_info_from_head(
        {"ContentLength": 9, "ETag": '"0123abcd-3"', "ChecksumSHA256": full}
    ) == ObjectInfo(9, None, full)


def test_translate_errors() -> None:
    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "Op",
        )

    assert type(_translate(client_error("NoSuchUpload", 404), "x")) is NoSuchUpload
    assert type(_translate(client_error("InvalidPart", 400), "x")) is InvalidParts
    assert type(_translate(client_error("EntityTooSmall", 400), "x")) is InvalidParts
    assert type(_translate(client_error("PreconditionFailed", 412), "x")) is ObjectExists
    assert type(_translate(client_error("SlowDown", 503), "x")) is ObjectStoreUnavailable
    assert type(_translate(client_error("AccessDenied", 403), "x")) is ObjectStoreUnavailable
    assert type(_translate(client_error("Weird", 400), "x")) is ObjectStoreError
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert type(_translate(unreachable, "x")) is ObjectStoreUnavailable


# -- against the servers -----------------------------------------------------------------------


async def test_check(s3: S3Storage, s3_server: S3Endpoint) -> None:
    await s3.check()
    missing = S3Storage(
        "no-such-bucket-" + uuid.uuid4().hex[:8],
        "us-east-1",
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    with pytest.raises(ObjectStoreUnavailable, match="does not exist"):
        await missing.check()


async def test_check_unreachable_endpoint() -> None:
    port = free_port()  # nobody listens on it (and no other worker's server will)
    down = S3Storage("bucket", "us-east-1", f"http://127.0.0.1:{port}", "testing", "testing")
    with pytest.raises(ObjectStoreUnavailable, match="unreachable"):
        await down.check()
    with pytest.raises(ObjectStoreUnavailable):
        await down.head("a/b")


async def test_put_head_get(s3: S3Storage, http: httpx.AsyncClient, key: str) -> None:
    body = os.urandom(100_000)
    put = s3.presign_put(key, expires_in=60, size=len(body), sha256=sha(body))
    response = await http.put(put.url, content=body, headers=put.headers)
    assert response.status_code == 200, response.text

    assert await s3.head(key) == ObjectInfo(len(body), sha(body), b64sha(body))

    get = s3.presign_get(key, expires_in=60)
    response = await http.get(get.url)
    assert response.status_code == 200
    assert response.content == body

    response = await http.get(get.url, headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == body[10:20]


async def test_put_without_checksum_has_no_sha256(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    put = s3.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"abc", headers=put.headers)).status_code == 200
    info = await s3.head(key)
    assert info is not None and info.size == 3 and info.sha256 is None


async def test_head_missing_is_none(s3: S3Storage, key: str) -> None:
    assert await s3.head(key) is None


async def test_no_overwrite_with_a_still_valid_url(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    put = s3.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"first", headers=put.headers)).status_code == 200
    for url, headers in [
        (put.url, put.headers),
        (s3.presign_put(key, expires_in=60).url, put.headers),
    ]:
        response = await http.put(url, content=b"second", headers=headers)
        assert response.status_code == 412, response.text
    response = await http.get(s3.presign_get(key, expires_in=60).url)
    assert response.content == b"first"


@unchecked_by_moto("x-amz-checksum-sha256 is not checked against the body (S3: 400 BadDigest)")
async def test_body_not_matching_signed_sha256_is_refused(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    put = s3.presign_put(key, expires_in=60, size=11, sha256=sha(b"hello world"))
    response = await http.put(put.url, content=b"hello worlx", headers=put.headers)
    assert response.status_code == 400 and "BadDigest" in response.text
    assert await s3.head(key) is None
    # The URL is still good for the body it was signed for.
    response = await http.put(put.url, content=b"hello world", headers=put.headers)
    assert response.status_code == 200


@unchecked_by_moto("a pre-signed URL's signature is not checked (S3: 403 SignatureDoesNotMatch)")
async def test_url_used_for_another_key_is_refused(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    put = s3.presign_put(key, expires_in=60)
    response = await http.put(put.url.replace(key, key + "x"), content=b"x", headers=put.headers)
    assert response.status_code == 403
    assert await s3.head(key + "x") is None


async def test_download_name_becomes_content_disposition(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    put = s3.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"abc", headers=put.headers)).status_code == 200
    url = s3.presign_get(key, expires_in=60, download_name="backup.tar").url
    # The override is part of the signed query, so a client can't change it.
    assert "response-content-disposition=attachment%3B%20filename%3D%22backup.tar%22" in url
    response = await http.get(url)
    assert response.status_code == 200 and response.content == b"abc"
    # Real S3 (and moto >= 5.2.5) answer with the header; older moto ignored it.
    if "content-disposition" in response.headers:
        assert response.headers["content-disposition"] == 'attachment; filename="backup.tar"'


async def test_delete(s3: S3Storage, http: httpx.AsyncClient, key: str) -> None:
    put = s3.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"abc", headers=put.headers)).status_code == 200
    await s3.delete(key)
    assert await s3.head(key) is None
    await s3.delete(key)  # deleting a missing object is fine


# -- multipart -------------------------------------------------------------------------------


async def put_part(
    http: httpx.AsyncClient, s3: S3Storage, key: str, upload_id: str, number: int, data: bytes
) -> httpx.Response:
    request = s3.presign_part(
        key, upload_id, number, expires_in=60, size=len(data), sha256=sha(data)
    )
    return await http.put(request.url, content=data, headers=request.headers)


async def upload_parts(
    http: httpx.AsyncClient, s3: S3Storage, key: str, upload_id: str, datas: list[bytes]
) -> list[CompletedPart]:
    parts = []
    for number, data in enumerate(datas, start=1):
        response = await put_part(http, s3, key, upload_id, number, data)
        assert response.status_code == 200, response.text
        parts.append(CompletedPart(number, response.headers["etag"], sha(data)))
    return parts


async def test_multipart_round_trip_with_resent_part(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    datas = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), b"tail"]
    upload_id = await s3.create_multipart(key)
    parts = await upload_parts(
        http, s3, key, upload_id, [datas[0], os.urandom(MIN_PART_SIZE), datas[2]]
    )
    response = await put_part(http, s3, key, upload_id, 2, datas[1])  # part 2 re-sent
    assert response.status_code == 200
    parts[1] = CompletedPart(2, response.headers["etag"], sha(datas[1]))

    info = await s3.complete_multipart(key, upload_id, parts)
    whole = b"".join(datas)
    composite = base64.b64encode(
        hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in datas)).digest()
    ).decode()
    assert info.size == len(whole)
    assert info.sha256 is None  # multipart SHA-256 checksums are composite
    assert info.checksum_sha256 is not None
    # S3 says "<composite>-3"; moto 5 leaves the suffix out.
    assert info.checksum_sha256.removesuffix("-3") == composite
    response = await http.get(s3.presign_get(key, expires_in=60).url)
    assert sha(response.content) == sha(whole)


async def test_complete_refuses_bad_parts(s3: S3Storage, http: httpx.AsyncClient, key: str) -> None:
    upload_id = await s3.create_multipart(key)
    parts = await upload_parts(http, s3, key, upload_id, [b"small", b"tail"])
    with pytest.raises(InvalidParts):  # S3 (and moto): EntityTooSmall
        await s3.complete_multipart(key, upload_id, parts)
    with pytest.raises(InvalidParts):  # S3 (and moto): InvalidPart
        await s3.complete_multipart(key, upload_id, [CompletedPart(1, '"0123"', sha(b"small"))])
    with pytest.raises(InvalidParts, match="ascending"):  # refused before asking S3
        await s3.complete_multipart(key, upload_id, [parts[1], parts[0]])
    assert await s3.head(key) is None
    await s3.abort_multipart(key, upload_id)


@unchecked_by_moto("a part's checksum in CompleteMultipartUpload is not checked (S3: BadDigest)")
async def test_complete_refuses_a_part_checksum_that_is_not_the_parts(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    datas = [os.urandom(MIN_PART_SIZE), b"tail"]
    upload_id = await s3.create_multipart(key)
    parts = await upload_parts(http, s3, key, upload_id, datas)
    claimed = [parts[0], CompletedPart(2, parts[1].etag, sha(b"tall"))]
    with pytest.raises(InvalidParts):
        await s3.complete_multipart(key, upload_id, claimed)
    assert await s3.head(key) is None
    await s3.abort_multipart(key, upload_id)


async def test_complete_never_overwrites(s3: S3Storage, http: httpx.AsyncClient, key: str) -> None:
    upload_id = await s3.create_multipart(key)
    parts = await upload_parts(http, s3, key, upload_id, [b"multipart"])
    put = s3.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"single", headers=put.headers)).status_code == 200
    with pytest.raises(ObjectExists):
        await s3.complete_multipart(key, upload_id, parts)
    response = await http.get(s3.presign_get(key, expires_in=60).url)
    assert response.content == b"single"


async def test_abort_and_no_such_upload(
    s3: S3Storage, s3_server: S3Endpoint, http: httpx.AsyncClient, key: str
) -> None:
    upload_id = await s3.create_multipart(key)
    await upload_parts(http, s3, key, upload_id, [b"abc"])
    await s3.abort_multipart(key, upload_id)
    if s3_server.kind == "seaweedfs":
        # SeaweedFS 4.48 answers 204 to aborting an upload it has just aborted (S3 and moto:
        # NoSuchUpload); callers take both as "gone". That it is gone: a late part is refused
        # (moto answers that with a 500).
        await s3.abort_multipart(key, upload_id)
        response = await put_part(http, s3, key, upload_id, 2, b"late")
        assert error_code(response) == "404 NoSuchUpload"
    else:
        with pytest.raises(NoSuchUpload):
            await s3.abort_multipart(key, upload_id)
    with pytest.raises(NoSuchUpload):
        await s3.abort_multipart(key, "no-such-upload")
    listed = s3._client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert upload_id not in [upload["UploadId"] for upload in listed]
    assert await s3.head(key) is None


# -- multipart with CRC32 parts ----------------------------------------------------------------


def crc(data: bytes) -> str:
    return crc32_b64(zlib.crc32(data))


async def upload_crc32_parts(
    http: httpx.AsyncClient, s3: S3Storage, key: str, upload_id: str, datas: list[bytes]
) -> list[CompletedPart]:
    parts = []
    for number, data in enumerate(datas, start=1):
        request = s3.presign_part(
            key, upload_id, number, expires_in=60, size=len(data), crc32=crc(data)
        )
        response = await http.put(request.url, content=data, headers=request.headers)
        assert response.status_code == 200, response.text
        parts.append(CompletedPart(number, response.headers["etag"], crc32=crc(data)))
    return parts


@signing_only
def test_presign_part_with_crc32_signs_its_header(
    s3: S3Storage, s3_server: S3Endpoint, key: str
) -> None:
    part = s3.presign_part(key, "upload-1", 2, expires_in=60, size=5, crc32=crc(b"hello"))
    assert crc(b"hello") == "NhCmhg=="
    assert part.headers == {"content-length": "5", "x-amz-checksum-crc32": "NhCmhg=="}
    query = query_of(part.url)
    assert query["X-Amz-SignedHeaders"] == "content-length;host;x-amz-checksum-crc32"
    secret = s3_server.secret_access_key
    assert presigned_url_is_valid(part.url, "PUT", part.headers, secret_access_key=secret)
    other = {**part.headers, "x-amz-checksum-crc32": crc(b"hellx")}
    assert not presigned_url_is_valid(part.url, "PUT", other, secret_access_key=secret)
    with pytest.raises(ValueError, match="exactly one"):
        s3.presign_part(key, "u", 1, expires_in=60, size=5)
    with pytest.raises(ValueError, match="exactly one"):
        s3.presign_part(key, "u", 1, expires_in=60, size=5, sha256=sha(b"x"), crc32=crc(b"x"))
    with pytest.raises(ValueError, match="base64 of 4 bytes"):
        s3.presign_part(key, "u", 1, expires_in=60, size=5, crc32="NhCmhg")


async def test_multipart_round_trip_with_crc32_parts(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    datas = [os.urandom(MIN_PART_SIZE), b"tail"]
    upload_id = await s3.create_multipart(key, checksum="crc32")
    parts = await upload_crc32_parts(http, s3, key, upload_id, datas)

    info = await s3.complete_multipart(key, upload_id, parts)
    whole = b"".join(datas)
    assert info.size == len(whole)
    assert info.sha256 is None and info.checksum_sha256 is None
    # A CRC32 upload is created with a full-object checksum: S3 keeps the CRC32 of the whole
    # object (combined from the parts'), which the agent can compute from its stream.
    head = s3._client.head_object(Bucket=s3.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert head["ChecksumCRC32"] == crc(whole) == info.crc32
    response = await http.get(s3.presign_get(key, expires_in=60).url)
    assert response.content == whole


async def test_complete_passes_the_whole_objects_crc32_for_storage_to_check(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    """S3 checks the full-object CRC32 given at CompleteMultipartUpload (BadDigest); moto 5 does
    not, but reports the CRC32 of what it assembled, which the server then compares."""
    datas = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), b"tail"]
    whole = b"".join(datas)
    swapped = b"".join([datas[1], datas[0], datas[2]])
    upload_id = await s3.create_multipart(key, checksum="crc32")
    parts = await upload_crc32_parts(http, s3, key, upload_id, datas)
    try:
        info = await s3.complete_multipart(key, upload_id, parts, object_crc32=crc(swapped))
    except InvalidParts:
        assert await s3.head(key) is None  # refused by the storage itself
        info = await s3.complete_multipart(key, upload_id, parts, object_crc32=crc(whole))
        assert info.crc32 == crc(whole)
    else:
        assert info.crc32 == crc(whole) != crc(swapped)  # the truth, for the server to compare


async def test_crc32_upload_refuses_sha256_parts(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    upload_id = await s3.create_multipart(key, checksum="crc32")
    parts = await upload_crc32_parts(http, s3, key, upload_id, [b"one", b"two"])
    mixed = [parts[0], CompletedPart(2, parts[1].etag, sha(b"two"))]
    with pytest.raises(InvalidParts, match="carry crc32"):  # refused before asking S3
        await s3.complete_multipart(key, upload_id, mixed)
    with pytest.raises(InvalidParts, match="base64 of 4 bytes"):
        await s3.complete_multipart(key, upload_id, [CompletedPart(1, parts[0].etag, crc32="x")])
    assert await s3.head(key) is None
    await s3.abort_multipart(key, upload_id)


@unchecked_by_moto("x-amz-checksum-crc32 is not checked against the body (S3: 400 BadDigest)")
async def test_part_body_not_matching_signed_crc32_is_refused(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    upload_id = await s3.create_multipart(key, checksum="crc32")
    request = s3.presign_part(key, upload_id, 1, expires_in=60, size=5, crc32=crc(b"hello"))
    try:
        response = await http.put(request.url, content=b"hellx", headers=request.headers)
        assert response.status_code == 400 and "BadDigest" in response.text
        listed = s3._client.list_parts(Bucket=s3.bucket, Key=key, UploadId=upload_id)
        assert listed.get("Parts", []) == []
    finally:
        await s3.abort_multipart(key, upload_id)


@unchecked_by_moto("x-amz-checksum-sha256 is not checked against a part (S3: 400 BadDigest)")
async def test_part_body_not_matching_signed_sha256_is_refused(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    upload_id = await s3.create_multipart(key)
    request = s3.presign_part(key, upload_id, 1, expires_in=60, size=5, sha256=sha(b"hello"))
    try:
        response = await http.put(request.url, content=b"hellx", headers=request.headers)
        assert response.status_code == 400 and "BadDigest" in response.text
        listed = s3._client.list_parts(Bucket=s3.bucket, Key=key, UploadId=upload_id)
        assert listed.get("Parts", []) == []
    finally:
        await s3.abort_multipart(key, upload_id)


# -- what a pre-signed URL allows, on a server that checks (SeaweedFS) ------------------------------


def error_code(response: httpx.Response) -> str:
    found = re.search(r"<Code>([^<]*)</Code>", response.text)
    return f"{response.status_code} {found.group(1) if found else '?'}"


def with_param(url: str, name: str, value: str) -> str:
    """``url`` with one query parameter's value replaced, everything else byte for byte."""
    changed, count = re.subn(rf"([?&]{name}=)[^&]*", rf"\g<1>{quote(value, safe='')}", url)
    assert count == 1, (name, url)
    return changed


def other_storage(
    s3: S3Storage,
    s3_server: S3Endpoint,
    *,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> S3Storage:
    """``s3``'s bucket through other credentials (the endpoint's where not given)."""
    return S3Storage(
        s3.bucket,
        s3.region,
        endpoint_url=s3_server.endpoint_url,
        access_key_id=access_key_id or s3_server.access_key_id,
        secret_access_key=secret_access_key or s3_server.secret_access_key,
    )


@on_seaweedfs
async def test_put_url_allows_exactly_its_own_request(
    s3: S3Storage, s3_server: S3Endpoint, http: httpx.AsyncClient, key: str
) -> None:
    body, other = b"hello world", key + "x"
    put = s3.presign_put(key, expires_in=900, size=len(body), sha256=sha(body))
    signature = query_of(put.url)["X-Amz-Signature"]
    forged = "0" + signature[1:] if signature[0] != "0" else "1" + signature[1:]
    wrong_secret = other_storage(s3, s3_server, secret_access_key="not-the-secret")
    unknown_key = other_storage(s3, s3_server, access_key_id="AKIDNOTKNOWN")

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in put.headers.items() if k != name}

    attempts: dict[str, tuple[str, str, dict[str, str], bytes]] = {
        "another key": ("PUT", put.url.replace(key, other), put.headers, body),
        "a forged signature": (
            "PUT",
            with_param(put.url, "X-Amz-Signature", forged),
            put.headers,
            body,
        ),
        "a longer lifetime": (
            "PUT",
            with_param(put.url, "X-Amz-Expires", "9000"),
            put.headers,
            body,
        ),
        "GET": ("GET", put.url, {}, b""),
        "DELETE": ("DELETE", put.url, {}, b""),
        "another size": (
            "PUT",
            put.url,
            {**put.headers, "content-length": "12"},
            body + b"!",
        ),
        "another body and its checksum": (
            "PUT",
            put.url,
            {**put.headers, "x-amz-checksum-sha256": b64sha(b"hello worlx")},
            b"hello worlx",
        ),
        "no checksum header": ("PUT", put.url, without("x-amz-checksum-sha256"), body),
        "no If-None-Match": ("PUT", put.url, without("if-none-match"), body),
        "signed with another secret": (
            "PUT",
            wrong_secret.presign_put(key, expires_in=900, size=len(body), sha256=sha(body)).url,
            put.headers,
            body,
        ),
        "an unknown access key": (
            "PUT",
            unknown_key.presign_put(key, expires_in=900, size=len(body), sha256=sha(body)).url,
            put.headers,
            body,
        ),
    }
    answers = {}
    for what, (method, url, headers, content) in attempts.items():
        response = await http.request(method, url, headers=headers, content=content)
        answers[what] = error_code(response)
    assert answers == {
        **{what: "403 SignatureDoesNotMatch" for what in attempts},
        "an unknown access key": "403 InvalidAccessKeyId",
    }
    assert await s3.head(key) is None and await s3.head(other) is None

    # The request it was signed for (through the same URL surgery, value unchanged) goes through.
    response = await http.put(
        with_param(put.url, "X-Amz-Expires", "900"), content=body, headers=put.headers
    )
    assert response.status_code == 200, response.text
    assert await s3.head(key) == ObjectInfo(len(body), sha(body), b64sha(body))


@on_seaweedfs
async def test_get_url_reads_only_its_own_object(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    put = s3.presign_put(key, expires_in=60)
    assert (await http.put(put.url, content=b"original", headers=put.headers)).status_code == 200
    other = key + "x"
    put_other = s3.presign_put(other, expires_in=60)
    assert (
        await http.put(put_other.url, content=b"other", headers=put_other.headers)
    ).status_code == 200
    get = s3.presign_get(key, expires_in=60, download_name="backup.tar.gz")

    answers = {
        "PUT": error_code(await http.put(get.url, content=b"evil")),
        "PUT to another key": error_code(
            await http.put(get.url.replace(key, key + "y"), content=b"evil")
        ),
        "DELETE": error_code(await http.delete(get.url)),
        "GET another key": error_code(await http.get(get.url.replace(key, other))),
        "GET with another file name": error_code(
            await http.get(
                with_param(get.url, "response-content-disposition", "attachment; filename=x.exe")
            )
        ),
    }
    assert answers == dict.fromkeys(answers, "403 SignatureDoesNotMatch")
    assert await s3.head(key + "y") is None
    response = await http.get(get.url)
    assert response.status_code == 200 and response.content == b"original"


@on_seaweedfs
async def test_part_url_allows_exactly_its_own_part(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    upload_id = await s3.create_multipart(key)
    other_upload = await s3.create_multipart(key)  # a real upload of the same key
    data = b"hello"
    part = s3.presign_part(key, upload_id, 2, expires_in=60, size=len(data), sha256=sha(data))
    try:
        attempts = {
            "another part number": (with_param(part.url, "partNumber", "3"), part.headers),
            "another upload": (with_param(part.url, "uploadId", other_upload), part.headers),
            "another key": (part.url.replace(key, key + "x"), part.headers),
            "no checksum header": (
                part.url,
                {k: v for k, v in part.headers.items() if k != "x-amz-checksum-sha256"},
            ),
            "a CRC32 instead": (
                part.url,
                {"content-length": "5", "x-amz-checksum-crc32": crc(data)},
            ),
        }
        answers = {
            what: error_code(await http.put(url, content=data, headers=headers))
            for what, (url, headers) in attempts.items()
        }
        assert answers == dict.fromkeys(attempts, "403 SignatureDoesNotMatch")
        for upload in (upload_id, other_upload):
            listed = s3._client.list_parts(Bucket=s3.bucket, Key=key, UploadId=upload)
            assert listed.get("Parts", []) == []

        response = await http.put(
            with_param(part.url, "partNumber", "2"), content=data, headers=part.headers
        )
        assert response.status_code == 200, response.text
        listed = s3._client.list_parts(Bucket=s3.bucket, Key=key, UploadId=upload_id)
        assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(2, 5)]
    finally:
        await s3.abort_multipart(key, upload_id)
        await s3.abort_multipart(key, other_upload)


@on_seaweedfs
async def test_expired_urls_are_refused(s3: S3Storage, http: httpx.AsyncClient, key: str) -> None:
    done = s3.presign_put(key, expires_in=60)
    assert (await http.put(done.url, content=b"abc", headers=done.headers)).status_code == 200
    upload_id = await s3.create_multipart(key + ".parts")
    try:
        put = s3.presign_put(key + ".new", expires_in=1)
        get = s3.presign_get(key, expires_in=1)
        part = s3.presign_part(
            key + ".parts", upload_id, 1, expires_in=1, size=3, sha256=sha(b"abc")
        )
        # X-Amz-Date has whole seconds: 2 s later every 1 s URL has expired.
        await asyncio.sleep(2.1)
        answers = {
            "PUT": await http.put(put.url, content=b"abc", headers=put.headers),
            "GET": await http.get(get.url),
            "part": await http.put(part.url, content=b"abc", headers=part.headers),
        }
        for response in answers.values():
            assert error_code(response) == "403 AccessDenied", response.text
            assert "expired" in response.text
        assert await s3.head(key + ".new") is None
    finally:
        await s3.abort_multipart(key + ".parts", upload_id)


@on_seaweedfs
async def test_racing_uploads_to_one_key_have_exactly_one_winner(
    s3: S3Storage, http: httpx.AsyncClient, key: str
) -> None:
    """``If-None-Match: *`` is atomic: of several uploads racing to one new key, one lands and the
    others are refused (S3: 412, or 409 ConditionalRequestConflict while another is in flight)."""
    bodies = [f"upload {i} ".encode() * 20_000 for i in range(8)]
    requests = [s3.presign_put(key, expires_in=60, size=len(b), sha256=sha(b)) for b in bodies]
    responses = await asyncio.gather(
        *(
            http.put(r.url, content=b, headers=r.headers)
            for r, b in zip(requests, bodies, strict=True)
        )
    )
    winners = [i for i, r in enumerate(responses) if r.status_code == 200]
    assert len(winners) == 1, [error_code(r) for r in responses]
    assert {r.status_code for r in responses} - {200} <= {409, 412}
    response = await http.get(s3.presign_get(key, expires_in=60).url)
    assert response.content == bodies[winners[0]]


@on_seaweedfs
async def test_wrong_credentials_are_unavailable_not_missing(
    s3: S3Storage, s3_server: S3Endpoint, key: str
) -> None:
    wrong = other_storage(s3, s3_server, secret_access_key="not-the-secret")
    with pytest.raises(ObjectStoreUnavailable, match="check the credentials"):
        await wrong.check()
    # A refused HEAD is not "no such object": the server must not treat a backup as missing.
    with pytest.raises(ObjectStoreUnavailable):
        await wrong.head(key)
