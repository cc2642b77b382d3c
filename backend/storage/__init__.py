"""Object storage for backup archives: one protocol, an S3 backend and an embedded local backend.

    from backend.storage import S3Storage, LocalStorage, Storage

Services depend on :class:`Storage` only; ``create_app`` picks the backend from the settings and, for
the local one, mounts :func:`local_storage_handlers`. The exception tree is drawn in
:mod:`backend.storage.base`.
"""

from .base import (
    MAX_KEY_BYTES,
    MAX_PARTS,
    MAX_PRESIGN_SECONDS,
    MIN_PART_SIZE,
    AccessDenied,
    BadDigest,
    CompletedPart,
    InvalidParts,
    ListedObject,
    Listing,
    NoSuchKey,
    NoSuchUpload,
    ObjectChecksumMismatch,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    ObjectStoreUnavailable,
    PartChecksum,
    PresignedRequest,
    Storage,
    check_part_order,
    content_disposition,
    crc32_b64,
    crc32_b64_to_hex,
    sha256_b64_to_hex,
    sha256_hex_to_b64,
    validate_crc32_b64,
    validate_expires_in,
    validate_key,
    validate_sha256_hex,
)
from .local import LocalStorage
from .local_routes import local_storage_handlers
from .s3 import S3Storage

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
    "LocalStorage",
    "NoSuchKey",
    "NoSuchUpload",
    "ObjectChecksumMismatch",
    "ObjectExists",
    "ObjectInfo",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "PartChecksum",
    "PresignedRequest",
    "S3Storage",
    "Storage",
    "check_part_order",
    "content_disposition",
    "crc32_b64",
    "crc32_b64_to_hex",
    "local_storage_handlers",
    "sha256_b64_to_hex",
    "sha256_hex_to_b64",
    "validate_crc32_b64",
    "validate_expires_in",
    "validate_key",
    "validate_sha256_hex",
]
