"""A backup stored as one tar archive (``.tar.gz``, ``.tar.zst`` or ``.tar``, each maybe encrypted as
an ``age`` file, ``….age``) behind a pre-signed URL:

    GET (streamed, resumed with Range) -> hash -> [age decrypt] -> decompress -> tar members,
    one by one -> verify

The archive is never written to disk and never held in memory: it is hashed while it streams into the
tar reader, and each member is handed on as it is read. The whole object is read to its end, even the
bytes after the tar's end-of-archive blocks, so that its size and SHA-256 can be checked.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, Any, cast

import httpx
import zstandard

from .._age import AgeDecryptingReader, is_encrypted_name
from .._cancel import CancelToken
from .._errors import IntegrityError, RestoreError
from .._transport.retry import RetryPolicy
from .._transport.throttle import Throttle
from ..protocol import RestoreTicket
from .download import ResumableDownload
from .extraction import CHUNK
from .verification import DAMAGED_ARCHIVE, check_object

__all__ = ["ArchiveReader", "archive_opener"]


def archive_opener(filename: str) -> Callable[[IO[bytes]], IO[bytes]]:
    """The decompressor for an archive, chosen by its name (``.tar.gz``, ``.tar.zst``, ``.tar``;
    the same with ``.age`` is decrypted first, by ``ArchiveReader``)."""
    name = filename.lower().removesuffix(".age")
    if name.endswith((".tar.gz", ".tgz")):
        return lambda raw: cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if name.endswith((".tar.zst", ".tzst", ".tar.zstd")):
        return lambda raw: zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True
        )
    if name.endswith(".tar"):
        return lambda raw: raw
    raise RestoreError(f"{filename}: not a .tar.gz, .tar.zst or .tar archive")


class ArchiveReader:
    """Reads the tar archive a ``RestoreTicket`` points to, member by member, and verifies it.

    Raises ``RestoreError`` at once for a file name that is no archive this agent can read.
    ``identities`` (``age`` X25519 identities) open an encrypted archive; they are asked for only
    when the ticket names one, before anything is downloaded.
    """

    def __init__(
        self,
        http: httpx.Client,
        ticket: RestoreTicket,
        *,
        fresh_url: Callable[[], str],
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        cancel: CancelToken | None = None,
        limit: Throttle | None = None,
        identities: Callable[[RestoreTicket], Sequence[Any]] | None = None,
    ) -> None:
        self._opener = archive_opener(ticket.filename)
        self._identities: list[Any] | None = None
        if is_encrypted_name(ticket.filename):
            if identities is None:
                raise RestoreError(
                    f"{ticket.filename} is encrypted, and no key was given to open it"
                )
            self._identities = list(identities(ticket))
        self._expected_sha256 = ticket.sha256
        self._download = ResumableDownload(
            http,
            ticket.url,
            ticket.size,
            fresh_url=fresh_url,
            retry=retry,
            sleep=sleep,
            cancel=cancel,
            limit=limit,
        )

    @property
    def position(self) -> int:
        """Bytes of the object downloaded so far."""
        return self._download.position

    @property
    def resumed(self) -> int:
        """How often the download was resumed after an interruption."""
        return self._download.resumed

    @property
    def sha256(self) -> str:
        """The SHA-256 (hex) of the bytes downloaded so far: the object's, once ``read`` returns."""
        return self._download.sha256.hexdigest()

    def read(
        self, visit: Callable[[tarfile.TarInfo, Callable[[], IO[bytes] | None]], None]
    ) -> None:
        """Hand each member to ``visit`` with a function that opens its bytes (call it only for a
        regular file, and before ``visit`` returns), then read the rest and verify the whole object.

        Raises ``IntegrityError`` for an object that is not the recorded one or a damaged archive,
        ``RestoreError`` when the download fails past its retries.
        """
        download = self._download
        download.start()
        buffered: IO[bytes] = io.BufferedReader(download, CHUNK)
        plain: AgeDecryptingReader | None = None
        if self._identities is not None:
            plain = AgeDecryptingReader(buffered, self._identities)
            buffered = io.BufferedReader(plain, CHUNK)
        try:
            stream = self._opener(buffered)
            with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
                for member in tar:
                    visit(member, partial(tar.extractfile, member))
            if plain is not None:
                plain.drain()  # the age file's last chunk is authenticated at its end
            download.drain()
        except DAMAGED_ARCHIVE as exc:
            self._verify()  # a hash mismatch explains it best
            raise IntegrityError(f"the archive is damaged ({exc}); nothing was restored") from exc
        finally:
            if plain is not None:
                plain.close()
        self._verify()

    def _verify(self) -> None:
        download = self._download
        check_object(
            received=download.position,
            size=download.size,
            ended=download.at_eof,
            sha256=download.sha256.hexdigest(),
            expected=self._expected_sha256,
        )

    def close(self) -> None:
        """Stop the download and release its connection."""
        self._download.close()
