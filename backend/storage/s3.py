"""S3 (or an S3-compatible endpoint) behind the :class:`~backend.storage.base.Storage` protocol.

The server holds the only credentials; clients get SigV4 pre-signed URLs scoped to one method and one
exact key. Everything a URL must enforce is a *signed header*: a client that leaves one out, or sends
another value, gets ``SignatureDoesNotMatch`` from S3, and S3 itself checks a signed
``x-amz-checksum-sha256`` (or, for an upload created with CRC32 parts, ``x-amz-checksum-crc32``)
against the body (``BadDigest``).

boto3 is synchronous: every network call runs in a worker thread (``anyio.to_thread``); presigning is
local computation and stays sync.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    MAX_PARTS,
    CompletedPart,
    InvalidParts,
    ListedObject,
    Listing,
    NoSuchKey,
    NoSuchUpload,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    ObjectStoreUnavailable,
    PartChecksum,
    PresignedRequest,
    check_part_order,
    content_disposition,
    part_checksum_of,
    sha256_b64_to_hex,
    sha256_hex_to_b64,
    validate_crc32_b64,
    validate_expires_in,
    validate_key,
)

if TYPE_CHECKING:
    from .base import Storage

__all__ = ["S3Storage", "object_info_from_head"]

T = TypeVar("T")

_MULTIPART_ETAG = re.compile(r'^"?[0-9a-fA-F]+-(\d+)"?$')

_INVALID_PARTS_CODES = frozenset(
    {
        "InvalidPart",
        "InvalidPartOrder",
        "EntityTooSmall",
        "BadDigest",
        "InvalidDigest",
        "MalformedXML",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "RequestTimeout",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "Throttling",
    }
)


def _client_error_code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _translate(exc: Exception, what: str) -> ObjectStoreError:
    """One botocore error → our tree. ``what`` says what we were doing, for the message."""
    if isinstance(exc, ClientError):
        code, status = _client_error_code(exc)
        message = f"{what}: S3 answered {status} {code}"
        if code == "NoSuchUpload":
            return NoSuchUpload(f"{what}: the multipart upload does not exist")
        if code in _INVALID_PARTS_CODES:
            return InvalidParts(f"{what}: S3 refused the parts ({code})")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            return ObjectExists(f"{what}: the key already holds an object")
        if code in _UNAVAILABLE_CODES or status >= 500 or status in (401, 403):
            return ObjectStoreUnavailable(f"{message}; check the bucket, credentials and endpoint")
        return ObjectStoreError(message)
    # BotoCoreError: connection refused/reset, timeouts, missing credentials, …
    return ObjectStoreUnavailable(f"{what}: S3 is unreachable ({exc})")


def object_info_from_head(response: dict[str, Any]) -> ObjectInfo:
    """Build :class:`ObjectInfo` from a ``head_object(ChecksumMode="ENABLED")`` response.

    ``sha256`` is set only for a full-object checksum: a multipart object's SHA-256 is always
    *composite* (a hash of the parts' hashes; S3 offers full-object multipart checksums only for CRCs).
    S3 marks it with ``ChecksumType: COMPOSITE`` and a ``-N`` suffix; moto 5 gives neither, so a
    multipart ETag (``"…-N"``) also marks the object as multipart.
    """
    raw = response.get("ChecksumSHA256")
    sha256: str | None = None
    if raw and "-" not in raw and response.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        if not _MULTIPART_ETAG.match(str(response.get("ETag", ""))):
            sha256 = sha256_b64_to_hex(raw)
    # A CRC32 counts only when S3 says it is the whole object's (an upload created FULL_OBJECT);
    # a composite one ("…-N", or no ChecksumType from an older store) is a CRC of the parts' CRCs.
    crc = response.get("ChecksumCRC32")
    crc32 = (
        crc if crc and "-" not in crc and response.get("ChecksumType") == "FULL_OBJECT" else None
    )
    return ObjectInfo(
        size=int(response["ContentLength"]), sha256=sha256, checksum_sha256=raw, crc32=crc32
    )


def _completed_part(part: CompletedPart) -> dict[str, Any]:
    entry: dict[str, Any] = {"PartNumber": part.part_number, "ETag": part.etag}
    if part.crc32 is not None:
        entry["ChecksumCRC32"] = part.crc32
    elif part.sha256 is not None:
        entry["ChecksumSHA256"] = sha256_hex_to_b64(part.sha256)
    return entry


class S3Storage:
    """Objects in one S3 bucket; see the module docstring."""

    kind: str = "s3"

    def __init__(
        self,
        bucket: str,
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        *,
        conditional_writes: bool = True,
    ) -> None:
        """``conditional_writes`` signs ``If-None-Match: *`` into upload URLs and completes, so a key
        that already holds an object is never overwritten (S3 since 2024; turn it off only for an
        S3-compatible store that rejects the header)."""
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.conditional_writes = conditional_writes
        config = Config(
            signature_version="s3v4",
            region_name=region,
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            # botocore >= 1.36 would otherwise add CRC32 checksum parameters of an empty body to
            # pre-signed URLs, which S3 then checks against the real body.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, region={self.region!r}, endpoint_url={self.endpoint_url!r})"

    # -- presigning (pure computation) ---------------------------------------------------------

    def _presign(
        self,
        operation: str,
        params: dict[str, Any],
        expires_in: int,
        method: str,
        headers: dict[str, str],
    ) -> PresignedRequest:
        validate_expires_in(expires_in)
        # Taken before signing, so the real expiry (X-Amz-Date + X-Amz-Expires) is never earlier.
        expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
        url = self._client.generate_presigned_url(
            operation,
            Params={"Bucket": self.bucket, **params},
            ExpiresIn=expires_in,
            HttpMethod=method,
        )
        return PresignedRequest(url=str(url), method=method, headers=headers, expires_at=expires_at)

    def presign_put(
        self, key: str, *, expires_in: int, size: int | None = None, sha256: str | None = None
    ) -> PresignedRequest:
        validate_key(key)
        params: dict[str, Any] = {"Key": key}
        headers: dict[str, str] = {}
        if size is not None:
            if size < 0:
                raise ValueError("size must not be negative")
            params["ContentLength"] = size
            headers["content-length"] = str(size)
        if sha256 is not None:
            b64 = sha256_hex_to_b64(sha256)
            params["ChecksumSHA256"] = b64
            headers["x-amz-checksum-sha256"] = b64
            # What the AWS SDKs send with a checksum. S3 stores the checksum either way; moto 5 only
            # records it when this header names the algorithm (it never verifies it against the body).
            params["ChecksumAlgorithm"] = "SHA256"
            headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
        if self.conditional_writes:
            # A still-valid URL must not overwrite a finished backup: S3 answers 412 to a PUT with
            # If-None-Match: * when the key exists.
            params["IfNoneMatch"] = "*"
            headers["if-none-match"] = "*"
        return self._presign("put_object", params, expires_in, "PUT", headers)

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        validate_key(key)
        params: dict[str, Any] = {"Key": key}
        if download_name is not None:
            params["ResponseContentDisposition"] = content_disposition(download_name)
        return self._presign("get_object", params, expires_in, "GET", {})

    def presign_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        *,
        expires_in: int,
        size: int,
        sha256: str | None = None,
        crc32: str | None = None,
    ) -> PresignedRequest:
        validate_key(key)
        if not upload_id:
            raise ValueError("upload_id must not be empty")
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"part_number must be between 1 and {MAX_PARTS}")
        if size < 0:
            raise ValueError("size must not be negative")
        if (sha256 is None) == (crc32 is None):
            raise ValueError("a part URL needs exactly one of sha256 and crc32")
        params: dict[str, Any] = {
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "ContentLength": size,
        }
        headers = {"content-length": str(size)}
        if crc32 is not None:
            params["ChecksumCRC32"] = headers["x-amz-checksum-crc32"] = validate_crc32_b64(crc32)
        else:
            assert sha256 is not None
            params["ChecksumSHA256"] = headers["x-amz-checksum-sha256"] = sha256_hex_to_b64(sha256)
        return self._presign("upload_part", params, expires_in, "PUT", headers)

    # -- network calls (in a worker thread) ----------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, what) from exc

    async def _on_object(self, verb: str, key: str, fn: Callable[[], T]) -> T:
        """``fn`` on the object at ``key``; a missing object is :class:`NoSuchKey`."""
        try:
            return await anyio.to_thread.run_sync(fn)
        except ClientError as exc:
            if _is_missing(exc):
                raise NoSuchKey(f"there is no object at {key}") from exc
            raise _translate(exc, f"{verb} {key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"{verb} {key}") from exc

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            response = await anyio.to_thread.run_sync(
                functools.partial(
                    self._client.head_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                )
            )
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise _translate(exc, f"head {key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"head {key}") from exc
        return object_info_from_head(response)

    async def create_multipart(self, key: str, *, checksum: PartChecksum = "sha256") -> str:
        validate_key(key)
        response = await self._call(
            f"create multipart upload of {key}",
            self._client.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            **(
                # S3 combines the parts' CRC32s into the whole object's (full-object checksums
                # exist for CRCs only), which the agent computes over its stream and which
                # CompleteMultipartUpload then checks.
                {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"}
                if checksum == "crc32"
                else {"ChecksumAlgorithm": "SHA256"}
            ),
        )
        return str(response["UploadId"])

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        *,
        object_crc32: str | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        # S3 itself refuses parts whose algorithm is not the upload's (InvalidPart).
        checksum = part_checksum_of(parts)
        check_part_order(parts, checksum)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": [_completed_part(part) for part in parts]},
        }
        if self.conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        if object_crc32 is not None:
            # S3 answers BadDigest unless the object it assembles has this CRC32.
            kwargs["ChecksumCRC32"] = validate_crc32_b64(object_crc32)
            kwargs["ChecksumType"] = "FULL_OBJECT"
        # Note: for an unknown upload id moto 5 answers 500 (a KeyError) where S3 answers
        # NoSuchUpload; that surfaces here as ObjectStoreUnavailable.
        await self._call(
            f"complete multipart upload of {key}", self._client.complete_multipart_upload, **kwargs
        )
        info = await self.head(key)
        if info is None:
            raise ObjectStoreError(
                f"complete multipart upload of {key}: the object is missing afterwards"
            )
        return info

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_key(key)
        await self._call(
            f"abort multipart upload of {key}",
            self._client.abort_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call(f"delete {key}", self._client.delete_object, Bucket=self.bucket, Key=key)

    async def check(self) -> None:
        try:
            await anyio.to_thread.run_sync(
                functools.partial(self._client.head_bucket, Bucket=self.bucket)
            )
        except ClientError as exc:
            code, status = _client_error_code(exc)
            if status == 404 or code in ("404", "NoSuchBucket"):
                raise ObjectStoreUnavailable(
                    f"S3 bucket {self.bucket!r} does not exist; create it or fix AWS_S3_BUCKET"
                ) from exc
            raise ObjectStoreUnavailable(
                f"S3 bucket {self.bucket!r} is not usable ({status} {code}); check the credentials"
            ) from exc
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"S3 endpoint is unreachable ({exc})") from exc

    # -- the server's own objects ------------------------------------------------------------

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        validate_key(key)
        sha256 = hashlib.sha256(data).hexdigest()
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ChecksumSHA256": sha256_hex_to_b64(sha256),
        }
        if self.conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        await self._call(f"put {key}", self._client.put_object, **kwargs)
        return ObjectInfo(size=len(data), sha256=sha256)

    async def get_bytes(self, key: str) -> bytes:
        validate_key(key)

        def read() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())

        return await self._on_object("get", key, read)

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        validate_key(key)

        def upload() -> int:
            # boto3's managed transfer: one PUT, or a multipart upload for a large file.
            self._client.upload_file(Filename=str(path), Bucket=self.bucket, Key=key)
            return path.stat().st_size

        size = await self._call(f"upload {key}", upload)
        return ObjectInfo(size=size, sha256=None)

    async def get_file(self, key: str, path: Path) -> int:
        validate_key(key)

        def download() -> int:
            self._client.download_file(Bucket=self.bucket, Key=key, Filename=str(path))
            return path.stat().st_size

        return await self._on_object("download", key, download)

    async def list_objects(self, prefix: str, *, delimiter: str | None = None) -> Listing:
        def pages() -> Listing:
            objects: list[ListedObject] = []
            prefixes: list[str] = []
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                params["Delimiter"] = delimiter
            for page in self._client.get_paginator("list_objects_v2").paginate(**params):
                for item in page.get("Contents", []):
                    modified = item.get("LastModified")
                    objects.append(
                        ListedObject(
                            key=str(item["Key"]),
                            size=int(item["Size"]),
                            modified=modified.astimezone(UTC) if modified else None,
                        )
                    )
                prefixes.extend(str(p["Prefix"]) for p in page.get("CommonPrefixes", []))
            return Listing(objects=objects, prefixes=prefixes)

        return await self._call(f"list {prefix}", pages)


def _is_missing(exc: ClientError) -> bool:
    code, status = _client_error_code(exc)
    return status == 404 or code in ("404", "NoSuchKey", "NotFound")


if TYPE_CHECKING:

    def _satisfies_protocol(storage: S3Storage) -> Storage:
        return storage
