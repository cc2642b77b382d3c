"""The arithmetic of a multipart upload: part sizes, how a stream is cut, CRC32s in S3's form, and
the numbered names a retried archive takes. Pure functions (doctested), shared by the uploader and
the server's own runner."""

from __future__ import annotations

import base64
import math
import re
import zlib

from .protocol import Body

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PART_SIZE",
    "MIB",
    "choose_part_size",
    "crc32_b64",
    "crc32_b64_of",
    "numbered_filename",
    "split_sizes",
]

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB


def crc32_b64(data: Body) -> str:
    """The CRC32 of ``data`` as S3's ``x-amz-checksum-crc32`` carries it (base64, big-endian).

    >>> crc32_b64(b"hello")
    'NhCmhg=='
    """
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


def crc32_b64_of(value: int) -> str:
    """A CRC32 value in S3's form (base64 of its 4 big-endian bytes)."""
    return base64.b64encode((value & 0xFFFFFFFF).to_bytes(4, "big")).decode("ascii")


def choose_part_size(
    *, configured: int | None, suggested: int | None, estimated_size: int, max_parts: int
) -> int:
    """The part size: the agent's setting, else the server's suggestion, else 16 MiB; raised (in whole
    MiB) when the estimated archive would not fit in ``max_parts`` parts with 10 % to spare.

    >>> choose_part_size(configured=None, suggested=None, estimated_size=10 * 2**30, max_parts=10000)
    16777216
    >>> choose_part_size(configured=None, suggested=None, estimated_size=1000 * 2**30, max_parts=10000)
    118489088
    """
    size = configured or suggested or DEFAULT_PART_SIZE
    needed = math.ceil(estimated_size * 1.1 / max(1, max_parts))
    if needed > size:
        size = math.ceil(needed / MIB) * MIB
    return min(size, MAX_PART_SIZE)


def split_sizes(total: int, part_size: int) -> list[int]:
    """Sizes of the parts a ``total``-byte stream is cut into (the last one may be shorter).

    >>> split_sizes(10, 4)
    [4, 4, 2]
    """
    if total <= 0:
        return [0]
    full, rest = divmod(total, part_size)
    return [part_size] * full + ([rest] if rest else [])


def numbered_filename(filename: str, n: int) -> str:
    """``backup-2025-01-07-143022.tar.gz`` -> ``backup-2025-01-07-143022-2.tar.gz`` (``n`` = 2)."""
    match = re.match(r"^(.*?)(\.tar(?:\.gz|\.zst)?)$", filename)
    stem, ext = (match.group(1), match.group(2)) if match else (filename, "")
    return f"{stem}-{n}{ext}"
