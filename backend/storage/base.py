"""The storage seam: one small protocol that S3 and the embedded local backend both implement.

Exceptions (each backend translates its own lower-level errors at the boundary)::

    ObjectStoreError              anything the storage refused or failed to do
     ├── ObjectStoreUnavailable   endpoint unreachable, bucket missing, credentials refused; retry
     ├── NoSuchUpload             the multipart upload id is unknown (never created, aborted, completed)
     ├── NoSuchKey                there is no object to read at that key
     ├── InvalidParts             the parts given to complete: bad etag/checksum, order, too small
     │    └── ObjectChecksumMismatch  the assembled object is not the one the client checksummed
     ├── ObjectExists             the key already holds an object; objects are never overwritten
     ├── BadDigest                (local backend) a body does not match the size/checksum it was
     │                            signed for
     └── AccessDenied             (local backend) a URL signature is invalid, expired, or for another
                                  method, key or upload

They are named for the object store so that they are not confused with the service layer's
:class:`backend.errors.StorageUnavailable` (the HTTP 503 a service raises after one of these) or the
engine's ``StorageError`` (an upload to a pre-signed URL failed).

Keys are validated by :func:`validate_key` (a ``ValueError``, not an ``ObjectStoreError``: a bad key
is a programming error of the caller, never a storage condition).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PARTS",
    "MAX_PRESIGN_SECONDS",
    "MIN_PART_SIZE",
    "AccessDenied",
    "BadDigest",
    "CompletedPart",
    "InvalidParts",
    "ListedObject",
    "Listing",
    "NoSuchKey",
    "NoSuchUpload",
    "ObjectChecksumMismatch",
    "ObjectExists",
    "ObjectInfo",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "PartChecksum",
    "PresignedRequest",
    "Storage",
    "check_part_order",
    "content_disposition",
    "crc32_b64",
    "crc32_b64_to_hex",
    "part_checksum_of",
    "sha256_b64_to_hex",
    "sha256_hex_to_b64",
    "validate_crc32_b64",
    "validate_expires_in",
    "validate_key",
    "validate_sha256_hex",
]

PartChecksum = Literal["sha256", "crc32"]
"""The checksum every part of one multipart upload carries, chosen when it is created: ``sha256``
(hex; S3's ``x-amz-checksum-sha256``) or ``crc32`` (base64 of the 4 big-endian bytes, exactly S3's
``x-amz-checksum-crc32``), about twice as cheap to compute."""

MAX_KEY_BYTES = 1024
"""S3's limit on a key's UTF-8 length."""

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's minimum size of every part of a multipart upload but the last."""

MAX_PARTS = 10_000
"""S3's maximum number of parts; part numbers run from 1 to this."""

MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""SigV4 refuses a pre-signed URL valid for longer than 7 days; the local backend keeps the same bound."""


class ObjectStoreError(Exception):
    """Base of every error a storage backend raises."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The storage did not answer or refused our credentials/bucket; safe to retry with backoff."""


class NoSuchUpload(ObjectStoreError):
    """The multipart upload does not exist (never created, already aborted or completed)."""


class InvalidParts(ObjectStoreError):
    """The part list cannot be assembled: unknown part, etag/checksum mismatch, order, size."""


class ObjectChecksumMismatch(InvalidParts):
    """The object the parts make has another full-object checksum than the client computed over
    the stream it uploaded (S3 answers ``BadDigest`` at completion; the local backend refuses it
    before publishing)."""


class NoSuchKey(ObjectStoreError):
    """There is no object at the key that was read."""


class ObjectExists(ObjectStoreError):
    """The key already holds an object and objects are never overwritten."""


class BadDigest(ObjectStoreError):
    """An uploaded body does not match the size or SHA-256 that was signed into its URL."""


class AccessDenied(ObjectStoreError):
    """A signed URL is invalid, expired, or used for another method, key or upload."""


@dataclass(frozen=True)
class PresignedRequest:
    """One HTTP request a client may make without credentials."""

    url: str
    method: str
    """``"PUT"`` or ``"GET"``."""
    headers: dict[str, str]
    """Headers the client must send verbatim (they are signed into the URL); may be empty."""
    expires_at: datetime
    """Timezone-aware UTC; the URL is refused from this instant on (or slightly later)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the storage knows about a stored object."""

    size: int
    sha256: str | None
    """Hex SHA-256 of the whole object when the storage knows it (local: always; S3: when a full-object
    checksum was signed into a single PUT)."""
    checksum_sha256: str | None = None
    """S3's raw ``ChecksumSHA256`` (base64; ``"…-N"`` composite for multipart objects)."""
    crc32: str | None = None
    """Base64 CRC32 of the whole object when the storage knows it: a multipart upload with CRC32
    parts (S3 keeps a full-object CRC32 for those; the local backend computes it)."""


@dataclass(frozen=True)
class CompletedPart:
    """One uploaded part, as the agent reports it to ``upload/complete``."""

    part_number: int
    etag: str
    sha256: str | None = None
    """Hex SHA-256 the agent computed for this part (an upload with ``sha256`` parts)."""
    crc32: str | None = None
    """Base64 CRC32 the agent computed for this part (an upload with ``crc32`` parts)."""


@dataclass(frozen=True)
class ListedObject:
    """One object a listing found."""

    key: str
    size: int
    modified: datetime | None = None
    """When it was stored (timezone-aware UTC), when the storage says."""


@dataclass(frozen=True)
class Listing:
    """What :meth:`Storage.list_objects` found under a prefix."""

    objects: list[ListedObject]
    """Objects, by key."""
    prefixes: list[str]
    """With a delimiter: the next level's "folders" (each ending with the delimiter), by name."""


class Storage(Protocol):
    """Object storage for backup archives. Keys are validated by :func:`validate_key`.

    Presigning is pure computation (sync); every call that talks to the storage is async and never
    blocks the event loop.
    """

    kind: str
    """``"s3"`` or ``"local"``."""
    bucket: str
    """The S3 bucket, or ``"local"``."""
    region: str

    def presign_put(
        self, key: str, *, expires_in: int, size: int | None = None, sha256: str | None = None
    ) -> PresignedRequest:
        """A PUT of one whole object at ``key``; ``size``/``sha256`` (hex), when given, are enforced
        by the storage. The URL never overwrites an existing object."""
        ...

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        """A GET of the object at ``key``, optionally served as an attachment named ``download_name``."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and checksum, or ``None`` when there is no object at ``key``."""
        ...

    async def create_multipart(self, key: str, *, checksum: PartChecksum = "sha256") -> str:
        """Start a multipart upload of ``key`` whose parts carry ``checksum``; returns its id. An
        upload with ``crc32`` parts also keeps the whole object's CRC32 (S3: ``FULL_OBJECT``)."""
        ...

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
        """A PUT of one part, refused by the storage unless its body has this size and checksum
        (exactly one of hex ``sha256`` or base64 ``crc32``, the upload's algorithm)."""
        ...

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        *,
        object_crc32: str | None = None,
    ) -> ObjectInfo:
        """Assemble the object from ``parts`` (ascending part numbers); never overwrites.

        ``object_crc32`` (an upload with CRC32 parts): the base64 CRC32 the client computed over
        the whole stream. A storage that can check it refuses another object with
        :class:`ObjectChecksumMismatch` (or S3's ``BadDigest``, an :class:`InvalidParts`); the
        returned ``crc32`` is what the storage holds, for the caller to compare as well."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; :class:`NoSuchUpload` when it does not exist."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        ...

    async def check(self) -> None:
        """Raise :class:`ObjectStoreUnavailable` unless the storage answers and the bucket exists."""
        ...

    # The server's own objects (its catalog copies and the metadata beside each backup): written
    # and read by the server itself, never through a signed URL.

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Store a small object; :class:`ObjectExists` when the key holds one already."""
        ...

    async def get_bytes(self, key: str) -> bytes:
        """The whole content of a small object; :class:`NoSuchKey` when there is none."""
        ...

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Store the file at ``path`` (any size; multipart where the storage needs it)."""
        ...

    async def get_file(self, key: str, path: Path) -> int:
        """Write the object into ``path`` (replaced); its size. :class:`NoSuchKey` when absent."""
        ...

    async def list_objects(self, prefix: str, *, delimiter: str | None = None) -> Listing:
        """Every object whose key starts with ``prefix``; with ``delimiter`` (``"/"``), only one
        level: the objects directly under it and the next level's prefixes."""
        ...


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def validate_key(key: str) -> str:
    """Return ``key`` when it is a safe object key, else raise ``ValueError`` saying why.

    A key is relative and ``/``-separated, with no empty, ``.`` or ``..`` segment, no control
    character, no backslash (a separator on Windows), and at most 1024 bytes of UTF-8.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("object key is not valid Unicode") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {MAX_KEY_BYTES} bytes of UTF-8")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise ValueError("object key contains a control character")
    if "\\" in key:
        raise ValueError("object key contains a backslash")
    for segment in key.split("/"):
        if segment == "":
            raise ValueError(
                "object key must be relative, with no empty segment ('//' or '/' at an end)"
            )
        if segment in (".", ".."):
            raise ValueError("object key contains a '.' or '..' segment")
    return key


def validate_sha256_hex(value: str) -> str:
    """The lower-case form of a hex SHA-256 digest; ``ValueError`` unless it is 64 hex digits."""
    lowered = value.lower()
    if not _SHA256_HEX.fullmatch(lowered):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return lowered


def validate_expires_in(expires_in: int) -> int:
    """``expires_in`` when it is 1 s to 7 days (SigV4's bound), else ``ValueError``."""
    if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
    return expires_in


def sha256_hex_to_b64(hex_digest: str) -> str:
    """Hex SHA-256 → the base64 form S3's ``x-amz-checksum-sha256`` carries."""
    return base64.b64encode(bytes.fromhex(validate_sha256_hex(hex_digest))).decode("ascii")


_CRC32_B64 = re.compile(r"[A-Za-z0-9+/]{6}==")


def validate_crc32_b64(value: str) -> str:
    """``value`` when it is the base64 of 4 bytes (S3's ``x-amz-checksum-crc32``), else
    ``ValueError``."""
    if not _CRC32_B64.fullmatch(value):
        raise ValueError("crc32 must be the base64 of 4 bytes (8 characters ending in '==')")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the pattern rules it out
        raise ValueError("crc32 is not valid base64") from exc
    return value


def crc32_b64(value: int) -> str:
    """A CRC32 (``zlib.crc32``) in S3's form: base64 of its 4 big-endian bytes.

    >>> crc32_b64(0x3610A686)  # zlib.crc32(b"hello")
    'NhCmhg=='
    """
    return base64.b64encode((value & 0xFFFFFFFF).to_bytes(4, "big")).decode("ascii")


def crc32_b64_to_hex(value: str) -> str:
    """S3's base64 CRC32 → 8 lower-case hex digits (``ValueError`` when malformed)."""
    return base64.b64decode(validate_crc32_b64(value)).hex()


def sha256_b64_to_hex(b64_digest: str) -> str | None:
    """S3's base64 SHA-256 → hex; ``None`` when it is not one plain 32-byte digest (e.g. composite)."""
    try:
        raw = base64.b64decode(b64_digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` (RFC 6266: an ASCII fallback plus ``filename*`` in UTF-8)."""
    if not filename or any(unicodedata.category(ch) == "Cc" for ch in filename):
        raise ValueError("download name must be non-empty, with no control character")
    fallback = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%' else "_" for ch in filename
    )
    header = f'attachment; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


def part_checksum_of(parts: Sequence[CompletedPart]) -> PartChecksum:
    """The algorithm ``parts`` carry (``crc32`` when the first one has a CRC32)."""
    return "crc32" if parts and parts[0].crc32 is not None else "sha256"


def check_part_order(parts: Sequence[CompletedPart], checksum: PartChecksum = "sha256") -> None:
    """:class:`InvalidParts` unless ``parts`` is what S3 accepts: non-empty, part numbers 1..10000,
    strictly ascending, each with a checksum of the upload's algorithm (hex SHA-256 or base64
    CRC32) and no other."""
    if not parts:
        raise InvalidParts("no parts to assemble")
    previous = 0
    for part in parts:
        if not 1 <= part.part_number <= MAX_PARTS:
            raise InvalidParts(f"part number {part.part_number} is outside 1..{MAX_PARTS}")
        if part.part_number <= previous:
            raise InvalidParts("part numbers must be strictly ascending")
        previous = part.part_number
        if checksum == "crc32":
            if part.sha256 is not None or part.crc32 is None:
                raise InvalidParts(f"part {part.part_number}: this upload's parts carry crc32")
            try:
                validate_crc32_b64(part.crc32)
            except ValueError as exc:
                raise InvalidParts(f"part {part.part_number}: {exc}") from exc
            continue
        if part.crc32 is not None or part.sha256 is None:
            raise InvalidParts(f"part {part.part_number}: this upload's parts carry sha256")
        try:
            validate_sha256_hex(part.sha256)
        except ValueError as exc:
            raise InvalidParts(f"part {part.part_number}: sha256 is not 64 hex digits") from exc
