"""What a snapshot writer may use (threads, memory in flight, pack size) and what it counts."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol import FileError
from .format import PACK_SIZE, ZSTD_LEVEL

__all__ = ["Progress", "SnapshotOptions", "WriteStats"]


@dataclass(frozen=True, slots=True)
class SnapshotOptions:
    readers: int = max(2, os.cpu_count() or 2)
    sealers: int = max(2, os.cpu_count() or 2)
    uploaders: int = 2
    pack_size: int = PACK_SIZE
    zstd_level: int = ZSTD_LEVEL
    max_inflight_bytes: int = 24 * 1024 * 1024
    """Chunk bytes read but not yet sealed into a pack, at most (back-pressure on the readers).
    48 MiB and two queued packs of two per uploader measured the same speed for ~35 MiB more peak
    memory (median of five first snapshots of the bench's tree)."""
    max_queued_packs: int = 1
    """Finished packs waiting for an uploader. Memory for packs stays below about
    ``(uploaders * batch + max_queued_packs + 2) * pack_size``."""
    upload_batch: int = 1
    """Packs one uploader takes at once when several wait (one request for their URLs)."""


@dataclass(slots=True)
class WriteStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    """Bytes of file content in the snapshot."""
    bytes_read: int = 0
    files_read: int = 0
    new_bytes: int = 0
    """Bytes uploaded (sealed blobs in new packs, pack headers included)."""
    new_blobs: int = 0
    packs: int = 0
    errors: list[FileError] = field(default_factory=list)


Progress = Callable[[WriteStats], None]
