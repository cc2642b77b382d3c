"""Version 1 of the repository format: object headers, blobs, and the documents (as msgspec
structs). ``docs/repository-format.md`` is the specification; this module is its reference code.

Pure functions of bytes and keys: no files, no network.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

import msgspec
import zstandard

from .crypto import SEAL_OVERHEAD, RepoKeys
from .errors import CorruptObject

VERSION: Final = 1
HEADER_SIZE: Final = 8

MAGIC_CONFIG: Final = b"BKRC"
MAGIC_INDEX: Final = b"BKIX"
MAGIC_SNAPSHOT: Final = b"BKSN"
MAGIC_PACK: Final = b"BKPK"
_BLOB_AAD_PREFIX: Final = b"BKBL" + bytes([VERSION])

CHUNK_MIN: Final = 512 * 1024
CHUNK_AVG: Final = 512 * 1024  # FastCDC's parameter: chunks average about min + avg = 1 MiB
CHUNK_MAX: Final = 8 * 1024 * 1024
PACK_SIZE: Final = 16 * 1024 * 1024
ZSTD_LEVEL: Final = 3
# The largest plaintext a reader accepts for a document or blob: a bound on what a damaged or
# hostile object can make a reader allocate.
MAX_DOCUMENT: Final = 256 * 1024 * 1024


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


def object_header(magic: bytes) -> bytes:
    return magic + bytes([VERSION, 0, 0, 0])


# --- documents ---------------------------------------------------------------------------------


class Node(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """One entry of a directory (see "Trees" in the format document)."""

    name: bytes
    type: str
    mode: int = 0
    mtime: int = 0
    ctime: int = 0
    inode: int = 0
    dev: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    content: list[bytes] = msgspec.field(default_factory=list)
    subtree: bytes | None = None
    target: bytes | None = None


class Tree(msgspec.Struct):
    v: int
    nodes: list[Node]


class Summary(msgspec.Struct, omit_defaults=False):
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    newBytes: int = 0  # noqa: N815 - the document's key
    newBlobs: int = 0  # noqa: N815
    packs: int = 0
    errors: int = 0


class SnapshotDoc(msgspec.Struct):
    v: int
    backupId: str  # noqa: N815
    configId: str  # noqa: N815
    configName: str  # noqa: N815
    time: str
    hostname: str
    sources: list[str]
    tree: bytes
    parent: str | None
    summary: Summary


class IndexPack(msgspec.Struct):
    id: bytes
    blobs: list[tuple[int, bytes, int, int, int, bool]]


class IndexDoc(msgspec.Struct):
    v: int
    packs: list[IndexPack]
    supersedes: list[bytes] = msgspec.field(default_factory=list)


class ChunkerParams(msgspec.Struct):
    algorithm: str = "fastcdc2020"
    min: int = CHUNK_MIN
    avg: int = CHUNK_AVG
    max: int = CHUNK_MAX


class CompressionParams(msgspec.Struct):
    algorithm: str = "zstd"
    level: int = ZSTD_LEVEL


class RepoConfig(msgspec.Struct):
    v: int
    id: bytes
    created: str
    chunker: ChunkerParams = msgspec.field(default_factory=ChunkerParams)
    compression: CompressionParams = msgspec.field(default_factory=CompressionParams)
    packSize: int = PACK_SIZE  # noqa: N815


_encoder = msgspec.msgpack.Encoder()
_TREE_DECODER = msgspec.msgpack.Decoder(Tree)
_DECODERS: dict[bytes, msgspec.msgpack.Decoder[Any]] = {
    MAGIC_CONFIG: msgspec.msgpack.Decoder(RepoConfig),
    MAGIC_INDEX: msgspec.msgpack.Decoder(IndexDoc),
    MAGIC_SNAPSHOT: msgspec.msgpack.Decoder(SnapshotDoc),
}
_KINDS = {MAGIC_CONFIG: "repository config", MAGIC_INDEX: "index", MAGIC_SNAPSHOT: "snapshot"}


def encode_document(doc: msgspec.Struct) -> bytes:
    return _encoder.encode(doc)


def _decompress(data: bytes, what: str) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DOCUMENT)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"{what} does not decompress: {exc}") from None


# --- whole objects (config, index, snapshot) ---------------------------------------------------


def encode_object(
    keys: RepoKeys, magic: bytes, doc: msgspec.Struct, *, level: int = ZSTD_LEVEL
) -> bytes:
    """The bytes of a config, index or snapshot object."""
    header = object_header(magic)
    body = zstandard.ZstdCompressor(level=level).compress(encode_document(doc))
    return header + keys.seal(header, body)


def open_object_body(keys: RepoKeys, magic: bytes, data: bytes, *, what: str) -> bytes:
    """The decrypted (still compressed) body of an object, after checking its header."""
    header = bytes(data[:HEADER_SIZE])
    if len(data) < HEADER_SIZE + SEAL_OVERHEAD or header[:4] != magic:
        raise CorruptObject(f"{what} is not a BackApp {_KINDS.get(magic, 'object')}")
    if header[4] != VERSION:
        raise CorruptObject(
            f"{what} has format version {header[4]}; this BackApp reads version {VERSION}: "
            "update the agent"
        )
    return keys.open(header, memoryview(data)[HEADER_SIZE:], what=what)


def decode_object(keys: RepoKeys, magic: bytes, data: bytes, *, what: str) -> Any:
    """The document of a config, index or snapshot object (``RepoConfig``, ``IndexDoc``,
    ``SnapshotDoc``); ``CorruptObject`` if anything about it is wrong."""
    plain = _decompress(open_object_body(keys, magic, data, what=what), what)
    try:
        doc = _DECODERS[magic].decode(plain)
    except msgspec.DecodeError as exc:
        raise CorruptObject(f"{what} holds an invalid document: {exc}") from None
    if doc.v != VERSION:
        raise CorruptObject(f"{what} has document version {doc.v}; this BackApp reads {VERSION}")
    return doc


# --- blobs -------------------------------------------------------------------------------------


def blob_aad(kind: int, compressed: bool, blob_id: bytes) -> bytes:
    return _BLOB_AAD_PREFIX + bytes([kind, 1 if compressed else 0]) + blob_id


class SealedBlob(msgspec.Struct, frozen=True):
    """A blob ready to go into a pack."""

    type: int
    id: bytes
    data: bytes
    raw_length: int
    compressed: bool


def seal_blob(
    keys: RepoKeys,
    kind: BlobType,
    plaintext: bytes | memoryview,
    *,
    blob_id: bytes | None = None,
    compressor: zstandard.ZstdCompressor | None = None,
) -> SealedBlob:
    """Compress (when it helps) and seal one blob. ``compressor=None`` stores it raw."""
    bid = keys.blob_id(plaintext) if blob_id is None else blob_id
    body: bytes | memoryview = plaintext
    compressed = False
    if compressor is not None and len(plaintext) > 0:
        packed = compressor.compress(plaintext)
        if len(packed) < len(plaintext):
            body, compressed = packed, True
    sealed = keys.seal(blob_aad(kind, compressed, bid), body)
    return SealedBlob(int(kind), bid, sealed, len(plaintext), compressed)


def open_blob(
    keys: RepoKeys,
    kind: int,
    blob_id: bytes,
    compressed: bool,
    raw_length: int,
    sealed: bytes | memoryview,
    *,
    what: str,
) -> bytes:
    """The plaintext of a stored blob, checked against its id."""
    body = keys.open(blob_aad(kind, compressed, blob_id), sealed, what=what)
    if compressed:
        try:
            plain = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"{what} does not decompress: {exc}") from None
    else:
        plain = body
    if len(plain) != raw_length or keys.blob_id(plain) != blob_id:
        raise CorruptObject(f"{what} does not match its id")
    return plain


# --- trees -------------------------------------------------------------------------------------


def encode_tree(nodes: list[Node]) -> bytes:
    return encode_document(Tree(v=VERSION, nodes=nodes))


def decode_tree(data: bytes, *, what: str) -> Tree:
    try:
        tree = _TREE_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise CorruptObject(f"{what} is not a valid tree: {exc}") from None
    if tree.v != VERSION:
        raise CorruptObject(f"{what} has tree version {tree.v}; this BackApp reads {VERSION}")
    return tree
