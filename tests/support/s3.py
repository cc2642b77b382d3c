"""Real S3 endpoints on loopback for tests (moto's server mode, and SeaweedFS), and an independent
SigV4 checker.

Register with ``pytest_plugins = ["tests.support.s3", "tests.support.seaweedfs"]`` in the root
``tests/conftest.py``. Tests ask for ``s3_server`` (and ``s3_bucket``, a fresh bucket on it):

* moto by default: in-process, fast, but it does not check the signatures of pre-signed URLs at all
  (any tampered, expired or re-targeted URL is accepted) nor checksum headers against bodies;
* SeaweedFS (``tests/support/seaweedfs.py``), which checks both, when the test says so::

      @pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)   # or ON_SEAWEEDFS

:func:`presigned_url_is_valid` re-implements S3's check of a query-signed request from the SigV4
specification, without botocore, to test what our URLs actually sign.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from backend.storage import S3Storage

__all__ = [
    "s3_storage",
    "ON_BOTH",
    "ON_SEAWEEDFS",
    "S3Endpoint",
    "drop_bucket",
    "moto_server",
    "new_bucket",
    "presigned_url_is_valid",
    "s3_bucket",
    "s3_server",
]

# Values for ``@pytest.mark.parametrize("s3_server", ..., indirect=True)``.
ON_BOTH = ["moto", "seaweedfs"]
ON_SEAWEEDFS = ["seaweedfs"]


@dataclass(frozen=True)
class S3Endpoint:
    endpoint_url: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    kind: str = "moto"  # or "seaweedfs"

    def client(self) -> Any:
        """A plain boto3 client, for test set-up only (one per endpoint: making one takes botocore
        a good half second on a busy machine, and every S3 test needs one)."""
        return _client(self)


@functools.cache
def _client(endpoint: S3Endpoint) -> Any:
    return boto3.session.Session().client(
        "s3",
        region_name=endpoint.region,
        endpoint_url=endpoint.endpoint_url,
        aws_access_key_id=endpoint.access_key_id,
        aws_secret_access_key=endpoint.secret_access_key,
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Endpoint]:
    """moto in server mode on 127.0.0.1 and a free port, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Endpoint(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_server(request: pytest.FixtureRequest) -> S3Endpoint:
    """The S3 endpoint a test runs against: moto unless the test parametrizes this fixture
    (indirectly) with ``"seaweedfs"``. Both servers are started at most once per session."""
    kind = getattr(request, "param", "moto")
    if kind not in ON_BOTH:
        raise ValueError(f"unknown S3 server {kind!r}; use one of {ON_BOTH}")
    endpoint: S3Endpoint = request.getfixturevalue(f"{kind}_server")
    return endpoint


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket on ``s3_server``."""
    name = new_bucket(s3_server)
    yield name
    drop_bucket(s3_server, name)


def new_bucket(endpoint: S3Endpoint) -> str:
    """Create a uniquely named, empty bucket (drop it with :func:`drop_bucket`)."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    endpoint.client().create_bucket(Bucket=name)
    return name


def drop_bucket(endpoint: S3Endpoint, name: str) -> None:
    """Empty and delete a bucket: both servers live for the whole session (and on SeaweedFS every
    bucket holding data takes one of a limited number of volumes)."""
    client = endpoint.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=name)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def presigned_url_is_valid(
    url: str,
    method: str,
    headers: Mapping[str, str],
    *,
    secret_access_key: str,
    now: datetime | None = None,
) -> bool:
    """Whether S3 would accept this query-signed (SigV4) request: the signature covers ``method``,
    the path, the query and every signed header, ``headers`` carries each signed header, and the URL
    has not expired at ``now``. Body checks (checksum, length) are S3's, not this function's."""
    parts = urlsplit(url)
    pairs = [
        (unquote(name), unquote(value))
        for name, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    ]
    query = dict(pairs)
    signature = query.get("X-Amz-Signature")
    if signature is None or query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return False
    amz_date = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expires = int(query["X-Amz-Expires"])
    if (now or datetime.now(UTC)) > amz_date + timedelta(seconds=expires):
        return False

    sent = {name.lower(): value for name, value in headers.items()}
    sent["host"] = parts.netloc
    signed_headers = query["X-Amz-SignedHeaders"].split(";")
    if any(name not in sent for name in signed_headers):
        return False
    canonical_query = "&".join(
        f"{_uri_encode(name)}={_uri_encode(value)}"
        for name, value in sorted(pairs)
        if name != "X-Amz-Signature"
    )
    canonical_headers = "".join(f"{name}:{sent[name].strip()}\n" for name in signed_headers)
    canonical_request = "\n".join(
        [
            method,
            parts.path,  # S3 signs the path as sent (encoded once, not twice)
            canonical_query,
            canonical_headers,
            ";".join(signed_headers),
            "UNSIGNED-PAYLOAD",
        ]
    )
    _access_key, date, region, service, terminator = query["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminator}"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            query["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + secret_access_key).encode("utf-8"), date)
    for part in (region, service, terminator):
        key = _hmac(key, part)
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def s3_storage(endpoint: S3Endpoint, bucket: str) -> S3Storage:
    """The server's S3 storage on ``endpoint``'s ``bucket``."""
    return S3Storage(
        bucket=bucket,
        region=endpoint.region,
        endpoint_url=endpoint.endpoint_url,
        access_key_id=endpoint.access_key_id,
        secret_access_key=endpoint.secret_access_key,
    )


def stored(s3: S3Endpoint, bucket: str) -> dict[str, int]:
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = int(obj["Size"])
    return out
