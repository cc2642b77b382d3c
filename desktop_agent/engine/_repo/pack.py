"""Packs: sealed blobs appended one after another, with their sealed header at the end.

``PackWriter`` builds one pack in memory (packs are ~16 MiB; the engine bounds how many are in
flight) as the list of its pieces: a finished pack is never joined into one buffer, because the
upload streams the pieces as they are (a join would copy every pack once more, at the moment the
sealers and uploaders hold the most memory). Small blobs are the exception: they are copied
into segments of up to 1 MiB, so that a pack of 100,000 tiny files is a few dozen pieces, not
100,000 objects each with its own overhead (and 100,000 tiny socket writes at upload).
``read_pack_header`` reads the blob list back from a pack's tail, which is how an index can be
rebuilt from packs alone.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import NamedTuple

import msgspec
import zstandard

from .crypto import SEAL_OVERHEAD, RepoKeys
from .errors import CorruptObject
from .format import (
    HEADER_SIZE,
    MAGIC_PACK,
    MAX_DOCUMENT,
    VERSION,
    SealedBlob,
    object_header,
    open_blob,
)

_LENGTH = struct.Struct("<I")
_HEADER_AAD = b"BKPH" + bytes([VERSION])
_ENTRIES = msgspec.msgpack.Decoder(list[tuple[int, bytes, int, int, int, bool]])
_encoder = msgspec.msgpack.Encoder()

# Blobs below this size are copied into a shared segment; larger ones stay their own piece.
_SMALL_BLOB = 64 * 1024
_SEGMENT = 1024 * 1024

#: A pack is finished at this many blobs even when it is below the pack size: what a pack costs
#: in memory until it is uploaded grows with its blob count (each entry is a Python object), and
#: a tree of tiny files would otherwise put ~200,000 blobs into one 16 MiB pack.
MAX_PACK_BLOBS = 16_384


class PackEntry(NamedTuple):
    """Where one blob is in a pack."""

    type: int
    id: bytes
    offset: int
    length: int
    raw_length: int
    compressed: bool


class Pack(NamedTuple):
    """A finished pack: its name (hex SHA-256 of its bytes), its bytes as the pieces that follow
    one another in it, its size and what it holds."""

    name: str
    parts: tuple[bytes, ...]
    size: int
    entries: list[PackEntry]

    def joined(self) -> bytes:
        """The pack as one buffer (a copy: for tests and readers, not for the upload path)."""
        return b"".join(self.parts)


class PackWriter:
    """Collects sealed blobs into one pack. Not thread-safe: one writer per packer thread."""

    def __init__(self, keys: RepoKeys) -> None:
        self._keys = keys
        self._parts: list[bytes] = []
        self._segment = bytearray(object_header(MAGIC_PACK))
        self._size = HEADER_SIZE
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        """Whether the pack holds as many blobs as a pack may (see ``MAX_PACK_BLOBS``)."""
        return len(self.entries) >= MAX_PACK_BLOBS

    def __len__(self) -> int:
        return len(self.entries)

    def _flush_segment(self) -> None:
        if self._segment:
            self._parts.append(bytes(self._segment))
            self._segment = bytearray()

    def add(self, blob: SealedBlob) -> PackEntry:
        entry = PackEntry(
            blob.type, blob.id, self._size, len(blob.data), blob.raw_length, blob.compressed
        )
        if len(blob.data) < _SMALL_BLOB:
            self._segment += blob.data
            if len(self._segment) >= _SEGMENT:
                self._flush_segment()
        else:
            self._flush_segment()
            self._parts.append(blob.data)
        self._size += len(blob.data)
        self.entries.append(entry)
        return entry

    def finish(self) -> Pack:
        self._flush_segment()
        plain = _encoder.encode([list(e) for e in self.entries])
        header = self._keys.seal(_HEADER_AAD, zstandard.ZstdCompressor(level=3).compress(plain))
        self._parts.append(header)
        self._parts.append(_LENGTH.pack(len(header)))
        parts = tuple(self._parts)
        self._parts = []
        digest = hashlib.sha256()
        for part in parts:  # hashlib releases the GIL on large updates
            digest.update(part)
        return Pack(digest.hexdigest(), parts, sum(map(len, parts)), self.entries)


def open_entry(keys: RepoKeys, entry: PackEntry, sealed: bytes | memoryview, *, what: str) -> bytes:
    """The plaintext of the blob ``entry`` lists, from its ``sealed`` bytes read out of the pack;
    checked against its id (:func:`open_blob`)."""
    return open_blob(
        keys, entry.type, entry.id, entry.compressed, entry.raw_length, sealed, what=what
    )


def header_length(tail: bytes | memoryview) -> int:
    """The sealed header's length, from a pack's last 4 bytes."""
    if len(tail) < _LENGTH.size:
        raise CorruptObject("pack is truncated")
    (length,) = _LENGTH.unpack(bytes(tail[-_LENGTH.size :]))
    return int(length)


def read_pack_header(
    keys: RepoKeys, data: bytes | memoryview, *, pack_size: int | None = None, what: str = "pack"
) -> list[PackEntry]:
    """The blob list of a pack, from its tail. ``data`` is the whole pack, or its last bytes when
    ``pack_size`` gives the pack's full size (enough: ``header_length`` + 4)."""
    view = memoryview(data)
    size = len(view) if pack_size is None else pack_size
    if pack_size is None and bytes(view[:4]) != MAGIC_PACK:
        raise CorruptObject(f"{what} is not a BackApp pack")
    if pack_size is None and view[4] != VERSION:
        raise CorruptObject(f"{what} has format version {view[4]}; this BackApp reads {VERSION}")
    length = header_length(view)
    if length < SEAL_OVERHEAD or length + _LENGTH.size > min(len(view), size - HEADER_SIZE):
        raise CorruptObject(f"{what} has an invalid header length")
    sealed = view[len(view) - _LENGTH.size - length : len(view) - _LENGTH.size]
    body = keys.open(_HEADER_AAD, sealed, what=f"{what} header")
    try:
        plain = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_DOCUMENT)
        raw = _ENTRIES.decode(plain)
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise CorruptObject(f"{what} header is invalid: {exc}") from None
    entries = [PackEntry(*e) for e in raw]
    limit = size - _LENGTH.size - length
    for e in entries:
        if e.offset < HEADER_SIZE or e.length < SEAL_OVERHEAD or e.offset + e.length > limit:
            raise CorruptObject(f"{what} header lists a blob outside the pack")
        if len(e.id) != 32 or e.type not in (0, 1):
            raise CorruptObject(f"{what} header lists an invalid blob")
    return entries


def iter_blobs(
    data: bytes | memoryview, entries: list[PackEntry]
) -> Iterator[tuple[PackEntry, memoryview]]:
    view = memoryview(data)
    for e in entries:
        yield e, view[e.offset : e.offset + e.length]
