"""The contract of snapshots (incremental backups) between the engine and a BackApp server: the
messages of the agent API's snapshot endpoints (``docs/agent-api.md``, "Extensions: snapshots"),
the two seams the snapshot engine talks to, and the pack bitmap both sides encode.

``ApiClient`` implements ``RepoPlane`` over HTTP; ``HttpStorage`` implements ``ObjectStore`` (PUTs
and ranged GETs through pre-signed URLs). The server decodes the bitmaps an agent commits with
``decode_bitmap``.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "MAX_OBJECTS_PER_REQUEST",
    "OBJECT_KINDS",
    "CompleteSnapshot",
    "ListedObject",
    "MissingObjects",
    "ObjectBody",
    "ObjectKind",
    "ObjectStore",
    "ObjectUpload",
    "ReadSlot",
    "RepoPlane",
    "RepositoryKeySource",
    "SnapshotStarted",
    "StartSnapshot",
    "UploadSlot",
    "body_size",
    "decode_bitmap",
    "encode_bitmap",
]

ObjectKind = Literal["config", "data", "index", "snapshot"]
OBJECT_KINDS: tuple[ObjectKind, ...] = ("config", "data", "index", "snapshot")
MAX_OBJECTS_PER_REQUEST = 256
ObjectBody = bytes | tuple[bytes, ...]
"""An object's bytes, whole or as pieces that follow one another (a pack is uploaded as the pieces
it was built from, never joined into one more copy)."""


def body_size(body: ObjectBody) -> int:
    """The number of bytes in ``body``."""
    return len(body) if isinstance(body, bytes) else sum(map(len, body))


def encode_bitmap(seqs: Iterable[int]) -> str:
    """``base64(zlib(bits))`` of a set of pack sequence numbers (bit ``n`` is bit ``n % 8``, least
    significant first, of byte ``n // 8``)."""
    values = list(seqs)
    bits = bytearray((max(values) // 8 + 1) if values else 0)
    for n in values:
        if n < 0:
            raise ValueError("sequence numbers are not negative")
        bits[n >> 3] |= 1 << (n & 7)
    return base64.b64encode(zlib.compress(bytes(bits), 6)).decode("ascii")


def decode_bitmap(text: str, *, limit: int | None = None) -> set[int]:
    """The sequence numbers in an ``encode_bitmap`` string; ``ValueError`` if it is not one (or
    names a number at or above ``limit``)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        d = zlib.decompressobj()
        bits = d.decompress(raw, 64 * 1024 * 1024) if raw else b""
        if d.unconsumed_tail or (raw and not d.eof):
            raise ValueError("bitmap is truncated or too large")
    except (ValueError, zlib.error, UnicodeEncodeError) as exc:
        raise ValueError(f"not a pack bitmap: {exc}") from None
    seqs = {
        (i << 3) | b for i, byte in enumerate(bits) if byte for b in range(8) if byte & (1 << b)
    }
    if limit is not None and seqs and max(seqs) >= limit:
        raise ValueError(f"the bitmap names pack {max(seqs)}, beyond the repository's {limit}")
    return seqs


@dataclass(frozen=True, slots=True)
class StartSnapshot:
    config_id: str
    lease_token: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    """``trigger``, ``attempt``, ``maxAttempts``, ``runRequestId`` as for ``backup/start``."""


@dataclass(frozen=True, slots=True)
class SnapshotStarted:
    backup_id: str
    agent_id: str
    """Whose repository it is (the machine's repository key is kept under it)."""
    initialized: bool
    pack_count: int
    live_packs: frozenset[int]
    parent_id: str | None
    lease_token: str | None = None
    lease_expires_at: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectUpload:
    kind: ObjectKind
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class UploadSlot:
    kind: ObjectKind
    name: str
    exists: bool
    seq: int | None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompleteSnapshot:
    backup_id: str
    files: int
    size: int
    new_bytes: int
    duration_ms: int
    packs: frozenset[int]
    indexes: tuple[str, ...]
    errors: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ListedObject:
    name: str
    size: int
    seq: int | None = None
    """The pack's sequence number (``data`` objects)."""


@dataclass(frozen=True, slots=True)
class ReadSlot:
    kind: ObjectKind
    name: str
    size: int
    url: str


class MissingObjects(Exception):
    """``snapshot/complete`` found objects that are not in storage."""

    def __init__(self, message: str, missing: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.missing = list(missing)


class RepoPlane(Protocol):
    """The server's snapshot endpoints."""

    def snapshot_start(self, request: StartSnapshot) -> SnapshotStarted: ...

    def snapshot_objects(
        self, backup_id: str, objects: Sequence[ObjectUpload]
    ) -> list[UploadSlot]: ...

    def snapshot_complete(self, request: CompleteSnapshot) -> str:
        """Returns the backup's final status; raises ``MissingObjects`` on a 409 naming them."""
        ...

    def snapshot_abort(self, backup_id: str, reason: str, *, cancelled: bool = False) -> None: ...

    def repo_read(self, objects: Sequence[tuple[ObjectKind, str]]) -> list[ReadSlot]:
        """GET URLs for those of ``objects`` the repository holds (the others are left out)."""
        ...

    def repo_list(
        self, kind: ObjectKind, *, after: str | None = None
    ) -> tuple[list[ListedObject], str | None]: ...


class RepositoryKeySource(Protocol):
    """Where a snapshot reader gets the 32-byte key of agent ``agent_id``'s repository: this
    machine's keychain by default; a source that unwraps the server's wrapped copy with the
    user's recovery code for a repository this machine never held (an inherited one, or its own
    after the keychain entry was lost). ``None``: no key here (the reader then stops with
    ``RepositoryKeyMissing`` before writing anything)."""

    def __call__(self, agent_id: str) -> bytes | None: ...


class ObjectStore(Protocol):
    """PUTs and GETs through pre-signed URLs."""

    def put_object(self, url: str, body: ObjectBody, headers: Mapping[str, str]) -> bool:
        """Upload ``body``; ``False`` when storage says the object already exists (412)."""
        ...

    def get_object(self, url: str, *, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or bytes ``start`` … ``end`` (inclusive) of it; ``MissingObject``
        when storage has no such object."""
        ...

    def iter_object(
        self, url: str, *, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        """``get_object``'s bytes in the pieces they arrive in (a reader then never holds the
        whole object or range); the request is made at the first ``next`` and ends when the
        iterator is exhausted or closed."""
        ...
