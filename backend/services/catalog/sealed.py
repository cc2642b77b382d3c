"""The sealed file a catalog copy is: the server's database, encrypted with a key derived from the
server secret.

Layout::

    "BACKAPP-CATALOG\\n"   16 bytes of magic
    header length          4 bytes, big-endian
    header                 UTF-8 JSON: format, version, database, compression, created, schema,
                           salt (hex, 32 random bytes), check (hex), chunkSize
    chunks                 AES-256-GCM of each chunkSize bytes of the payload (+16-byte tag)

Keys: HKDF-SHA256 of the server secret with the header's salt gives 64 bytes: the AES key, then
a key whose HMAC of a fixed text is the header's ``check`` (so a wrong secret is told apart from a
damaged file without decrypting anything). Chunk ``i`` is sealed with the nonce ``i`` (11 bytes,
big-endian) followed by ``1`` for the last chunk and ``0`` for the others, and the whole header
(magic included) as associated data: the STREAM construction of age and Tink, so chunks cannot be
reordered, dropped, or cut off at the end, and the header cannot be altered. A payload whose length
is a multiple of the chunk size ends with an empty last chunk.

Everything here blocks (file I/O and CPU); callers run it in a worker thread.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CHUNK_SIZE",
    "MAGIC",
    "CatalogError",
    "SealedHeader",
    "open_sealed",
    "open_small",
    "read_header",
    "seal",
    "seal_small",
]

MAGIC = b"BACKAPP-CATALOG\n"
FORMAT = "backapp-catalog"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
_TAG = 16
_MAX_HEADER = 64 * 1024
_INFO = b"backapp catalog v1"
_CHECK_TEXT = b"backapp catalog key check"


class CatalogError(Exception):
    """A catalog copy that cannot be used, said in words (not a catalog, another secret,
    damaged, or made for another database)."""


@dataclass(frozen=True)
class SealedHeader:
    """What a catalog copy says about itself, in the clear (and authenticated)."""

    database: str
    """``sqlite`` or ``postgresql``: what made the payload (and what can restore it)."""
    compression: str
    """``zstd`` or ``none``."""
    created: str
    """ISO 8601 UTC."""
    schema: str
    """The fingerprint of the migrations the database had (see ``dump.schema_fingerprint``)."""
    salt: str
    check: str
    chunk_size: int = CHUNK_SIZE

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "database": self.database,
            "compression": self.compression,
            "created": self.created,
            "schema": self.schema,
            "salt": self.salt,
            "check": self.check,
            "chunkSize": self.chunk_size,
        }


def _keys(secret: bytes, salt: bytes) -> tuple[bytes, bytes]:
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=_INFO).derive(secret)
    return material[:32], material[32:]


def _check(check_key: bytes) -> str:
    return hmac.new(check_key, _CHECK_TEXT, sha256).hexdigest()


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_full(source: IO[bytes], size: int) -> bytes:
    """``size`` bytes, fewer only at the end (a compressing reader may return short reads)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        data = source.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def seal(
    secret: bytes,
    source: IO[bytes],
    target: IO[bytes],
    *,
    database: str,
    compression: str,
    created: str,
    schema: str,
) -> SealedHeader:
    """Write ``source`` (read to its end) sealed into ``target``; returns the header."""
    salt = os.urandom(32)
    key, check_key = _keys(secret, salt)
    header = SealedHeader(
        database=database,
        compression=compression,
        created=created,
        schema=schema,
        salt=salt.hex(),
        check=_check(check_key),
    )
    encoded = json.dumps(header.to_json(), sort_keys=True).encode()
    prefix = MAGIC + len(encoded).to_bytes(4, "big") + encoded
    target.write(prefix)
    aead = AESGCM(key)
    index = 0
    chunk = _read_full(source, header.chunk_size)
    while True:
        following = _read_full(source, header.chunk_size)
        last = not following
        target.write(aead.encrypt(_nonce(index, last), chunk, prefix))
        if last:
            return header
        chunk, index = following, index + 1


def read_header(source: IO[bytes], what: str) -> tuple[SealedHeader, bytes]:
    """The header of a catalog copy and its raw bytes (the chunks' associated data);
    :class:`CatalogError` when ``source`` is not one. ``what`` names it in messages."""
    magic = source.read(len(MAGIC))
    if magic != MAGIC:
        raise CatalogError(f"{what} is not a BackApp catalog copy (it does not start like one)")
    length = int.from_bytes(source.read(4), "big")
    if not 2 <= length <= _MAX_HEADER:
        raise CatalogError(f"{what} is not a BackApp catalog copy (its header is malformed)")
    raw = source.read(length)
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError("format")
        if data.get("version") != VERSION:
            raise CatalogError(
                f"{what} is a catalog copy of format version {data.get('version')}; this server "
                f"reads version {VERSION} (use the BackApp version that made it)"
            )
        header = SealedHeader(
            database=str(data["database"]),
            compression=str(data["compression"]),
            created=str(data["created"]),
            schema=str(data["schema"]),
            salt=str(data["salt"]),
            check=str(data["check"]),
            chunk_size=int(data["chunkSize"]),
        )
        bytes.fromhex(header.salt)
    except CatalogError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CatalogError(
            f"{what} is not a BackApp catalog copy (its header is malformed)"
        ) from None
    if not 1024 <= header.chunk_size <= 64 * 1024 * 1024:
        raise CatalogError(f"{what} is not a BackApp catalog copy (its header is malformed)")
    return header, MAGIC + length.to_bytes(4, "big") + raw


def open_sealed(secret: bytes, source: IO[bytes], target: IO[bytes], what: str) -> SealedHeader:
    """Check and decrypt a catalog copy from ``source`` into ``target``.

    :class:`CatalogError` when it is not a catalog copy, was made with another server secret, or
    is damaged or cut short; ``target`` then holds part of the payload at most, which the caller
    throws away."""
    header, prefix = read_header(source, what)
    key, check_key = _keys(secret, bytes.fromhex(header.salt))
    if not hmac.compare_digest(_check(check_key), header.check):
        raise CatalogError(
            f"{what} was made with another server secret: set BACKAPP_SECRET_KEY (or the data "
            "folder's secret.key) to the secret of the server that made it"
        )
    aead = AESGCM(key)
    size = header.chunk_size + _TAG
    index = 0
    chunk = _read_full(source, size)
    while True:
        following = _read_full(source, size)
        last = not following
        try:
            target.write(aead.decrypt(_nonce(index, last), chunk, prefix))
        except InvalidTag:
            raise CatalogError(
                f"{what} is damaged or cut short (chunk {index} does not authenticate)"
            ) from None
        if last:
            return header
        chunk, index = following, index + 1


def sealed_header_of(path: Path, what: str) -> SealedHeader:
    """The header of the catalog copy at ``path`` (:class:`CatalogError` when it is not one)."""
    with path.open("rb") as source:
        return read_header(source, what)[0]


_SMALL_INFO = b"backapp backup metadata v1"


def _small_key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SMALL_INFO).derive(secret)


def seal_small(secret: bytes, data: bytes, context: str) -> str:
    """``data`` sealed (AES-256-GCM, random nonce, key derived from the server secret), bound to
    ``context`` (e.g. the backup id): base64 text for a JSON field."""
    nonce = os.urandom(12)
    sealed = AESGCM(_small_key(secret)).encrypt(nonce, data, context.encode())
    return base64.b64encode(nonce + sealed).decode("ascii")


def open_small(secret: bytes, text: str, context: str) -> bytes:
    """What :func:`seal_small` sealed; :class:`CatalogError` when it does not open (another
    server secret, another context, or altered)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        return AESGCM(_small_key(secret)).decrypt(raw[:12], raw[12:], context.encode())
    except (ValueError, InvalidTag):
        raise CatalogError(
            "a metadata object does not open with this server secret: set BACKAPP_SECRET_KEY to "
            "the secret of the server that wrote it"
        ) from None
