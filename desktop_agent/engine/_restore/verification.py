"""Is it the backup we stored? The object's size and SHA-256 against what the server recorded, and
which read errors mean a damaged archive.

A restore is only moved into place once ``check_object`` has passed on the whole object; a damaged
archive is reported as a hash mismatch when the hash explains it, since that is the truer cause.
"""

from __future__ import annotations

import gzip
import logging
import tarfile
import zlib

import zstandard

from .._errors import IntegrityError

__all__ = ["DAMAGED_ARCHIVE", "check_object"]

log = logging.getLogger("desktop_agent.engine.restore")

DAMAGED_ARCHIVE: tuple[type[Exception], ...] = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    zstandard.ZstdError,
    gzip.BadGzipFile,
)
"""What reading a truncated, corrupted or foreign archive raises (turned into ``IntegrityError``)."""


def check_object(
    *, received: int, size: int, ended: bool, sha256: str, expected: str | None
) -> None:
    """Raise ``IntegrityError`` unless the ``received`` bytes hashing to ``sha256`` are the object
    the backup recorded (``size`` bytes hashing to ``expected``).

    Before the whole object is in (``received < size``) only a stream that has ``ended`` early is an
    error. Without a recorded hash (``expected`` ``None``) only the size is checked, with a warning.
    """
    if received == size:
        if not expected:
            log.warning("the server recorded no SHA-256 for this backup: only its size is checked")
        elif sha256 != expected.lower():
            raise IntegrityError(
                f"SHA-256 mismatch: the downloaded object hashes to {sha256}, the backup "
                f"recorded {expected}; nothing was restored"
            )
    elif received < size and ended:
        raise IntegrityError(f"size mismatch: got {received} bytes, the backup recorded {size}")
