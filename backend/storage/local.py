"""The embedded default: objects on the server's own disk, uploaded through URLs the server signs.

URLs copy the guarantees of S3 presigning (see :mod:`backend.storage.local_signing`); the files lie
as :mod:`backend.storage.local_files` describes; the HTTP side lives in
:mod:`backend.storage.local_routes`. :meth:`LocalStorage.verify` checks a URL;
:meth:`LocalStorage.receive` stores a body.

Every blocking file operation runs in a worker thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio
import anyio.to_thread

from .base import (
    MAX_PARTS,
    MIN_PART_SIZE,
    AccessDenied,
    BadDigest,
    CompletedPart,
    Listing,
    NoSuchKey,
    NoSuchUpload,
    ObjectExists,
    ObjectInfo,
    ObjectStoreUnavailable,
    PartChecksum,
    PresignedRequest,
    content_disposition,
    crc32_b64_to_hex,
    validate_crc32_b64,
    validate_sha256_hex,
)
from .local_files import CHUNK, FileStore, PartDigest, sync_and_close
from .local_signing import ROUTE_PREFIX, Grant, UrlSigner, canonical_string

if TYPE_CHECKING:
    from .base import Storage

__all__ = [
    "ROUTE_PREFIX",
    "Grant",
    "LocalStorage",
    "canonical_string",
]


class LocalStorage:
    """Objects in a directory of the server; see the module docstring."""

    kind: str = "local"
    bucket: str = "local"
    region: str = "local"

    def __init__(
        self,
        root: Path,
        base_url: str,
        secret: bytes,
        *,
        min_part_size: int = MIN_PART_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``base_url``: how clients reach this server (no trailing slash). ``secret``: the server
        secret; a separate signing key is derived from it. ``min_part_size``: S3's 5 MiB rule by
        default, so a client that works here works against S3. ``clock``: Unix time, for tests."""
        self._signer = UrlSigner(base_url, secret, clock)
        self._files = FileStore(root, min_part_size=min_part_size, clock=clock)
        self.root = self._files.root
        self.base_url = self._signer.base_url
        self.min_part_size = min_part_size

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r}, base_url={self.base_url!r})"

    # -- signed URLs ---------------------------------------------------------------------------

    def signature(self, grant: Grant) -> str:
        """Hex HMAC-SHA256 of :func:`canonical_string`."""
        return self._signer.signature(grant)

    def url_for(self, grant: Grant) -> str:
        """The signed URL of ``grant``."""
        return self._signer.url_for(grant)

    def verify(self, method: str, key: str, query: Iterable[tuple[str, str]]) -> Grant:
        """The :class:`Grant` a request carries, or :class:`AccessDenied` saying why not.

        ``method`` is the request's method (a HEAD is checked as the GET it previews); ``key`` the
        decoded path after the route prefix; ``query`` the decoded query parameters, in order.
        """
        return self._signer.verify(method, key, query)

    def _put_grant(self, key: str, expires_in: int, size: int | None, sha256: str | None) -> Grant:
        """A PUT of ``key``, with its size and SHA-256 signed in when given."""
        self._files.check_key(key)
        if size is not None and size < 0:
            raise ValueError("size must not be negative")
        return Grant(
            method="PUT",
            key=key,
            expires=self._signer.expires(expires_in),
            size=size,
            sha256=None if sha256 is None else validate_sha256_hex(sha256),
        )

    def presign_put(
        self, key: str, *, expires_in: int, size: int | None = None, sha256: str | None = None
    ) -> PresignedRequest:
        return self._signer.presign(self._put_grant(key, expires_in, size, sha256))

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        self._files.check_key(key)
        if download_name is not None:
            content_disposition(download_name)  # refuses names that cannot be a header
        grant = Grant(
            method="GET", key=key, expires=self._signer.expires(expires_in), filename=download_name
        )
        return self._signer.presign(grant)

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
        if not self._files.is_upload_id(upload_id):
            raise ValueError("upload_id is not an id this storage issued")
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"part_number must be between 1 and {MAX_PARTS}")
        if (sha256 is None) == (crc32 is None):
            raise ValueError("a part URL needs exactly one of sha256 and crc32")
        grant = replace(
            self._put_grant(key, expires_in, size, sha256),
            upload_id=upload_id,
            part_number=part_number,
            crc32=None if crc32 is None else validate_crc32_b64(crc32),
        )
        return self._signer.presign(grant)

    def object_path(self, key: str) -> Path:
        """Where the object at ``key`` lives (whether or not it exists)."""
        return self._files.object_path(key)

    # -- the Storage protocol ------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        self._files.check_key(key)
        return await anyio.to_thread.run_sync(self._files.head, key)

    async def create_multipart(self, key: str, *, checksum: PartChecksum = "sha256") -> str:
        self._files.check_key(key)
        if checksum not in ("sha256", "crc32"):
            raise ValueError(f"unknown part checksum {checksum!r}")
        return await anyio.to_thread.run_sync(self._files.create_multipart, key, checksum)

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        *,
        object_crc32: str | None = None,
    ) -> ObjectInfo:
        self._files.check_key(key)
        return await anyio.to_thread.run_sync(
            self._files.complete_multipart, key, upload_id, list(parts), object_crc32
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._files.check_key(key)
        await anyio.to_thread.run_sync(self._files.abort_multipart, key, upload_id)

    async def delete(self, key: str) -> None:
        self._files.check_key(key)
        await anyio.to_thread.run_sync(self._files.delete, key)

    async def check(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._files.check)
        except OSError as exc:
            raise ObjectStoreUnavailable(
                f"local storage at {self.root} is not writable ({exc})"
            ) from exc

    # -- the server's own objects ------------------------------------------------------------

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return await anyio.to_thread.run_sync(self._files.store, key, [data])

    async def get_bytes(self, key: str) -> bytes:
        self._files.check_key(key)

        def read() -> bytes:
            try:
                return self._files.object_path(key).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
                raise NoSuchKey(f"there is no object at {key}") from exc

        return await anyio.to_thread.run_sync(read)

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        def chunks() -> Iterator[bytes]:
            with path.open("rb") as source:
                while chunk := source.read(CHUNK):
                    yield chunk

        return await anyio.to_thread.run_sync(self._files.store, key, chunks())

    async def get_file(self, key: str, path: Path) -> int:
        self._files.check_key(key)
        return await anyio.to_thread.run_sync(self._files.copy_out, key, path)

    async def list_objects(self, prefix: str, *, delimiter: str | None = None) -> Listing:
        return await anyio.to_thread.run_sync(self._files.list, prefix, delimiter)

    # -- receiving a body (used by the PUT route) ----------------------------------------------

    async def receive(self, grant: Grant, chunks: AsyncIterable[bytes]) -> str:
        """Store the body of a verified PUT; return its ETag (the quoted hex SHA-256, or for a part
        of an upload with ``crc32`` parts the quoted hex CRC32).

        Memory stays bounded: chunks are batched up to 1 MiB and written by a worker thread. A body
        longer than a signed size is refused as soon as it is, and nothing is left behind on any
        failure. Raises :class:`BadDigest`, :class:`ObjectExists`, :class:`NoSuchUpload`.
        """
        if grant.method != "PUT":
            raise AccessDenied("this URL is not for uploads")
        upload_dir: Path | None = None
        checksum: PartChecksum = "sha256"
        if grant.upload_id is not None or grant.part_number is not None:
            if grant.upload_id is None or grant.part_number is None:
                raise AccessDenied("a part URL needs both an upload id and a part number")
            upload_dir, checksum = await anyio.to_thread.run_sync(
                self._files.load_manifest, grant.key, grant.upload_id
            )
            signed = "crc32" if grant.crc32 is not None else "sha256"
            if signed != checksum or (grant.sha256 is not None and grant.crc32 is not None):
                raise AccessDenied(
                    f"this upload's parts carry {checksum}, the URL another checksum"
                )
        elif grant.crc32 is not None:
            raise AccessDenied("only a part URL carries a crc32")
        elif await self.head(grant.key) is not None:
            # Fail before reading a body that could never be published; publish re-checks.
            raise ObjectExists(f"{grant.key} already holds an object")

        out, temp = await anyio.to_thread.run_sync(
            self._files.new_temp, upload_dir or self._files.tmp
        )
        file: IO[bytes] | None = out
        published = False
        try:
            digest = PartDigest(checksum)
            size = 0
            pending = bytearray()

            def write(data: bytes) -> None:
                digest.update(data)
                out.write(data)

            async for chunk in chunks:
                size += len(chunk)
                if grant.size is not None and size > grant.size:
                    raise BadDigest(
                        f"the body is longer than the signed size of {grant.size} bytes"
                    )
                pending += chunk
                if len(pending) >= CHUNK:
                    await anyio.to_thread.run_sync(write, bytes(pending))
                    pending.clear()
            if pending:
                await anyio.to_thread.run_sync(write, bytes(pending))
            await anyio.to_thread.run_sync(sync_and_close, out)
            file = None
            if grant.size is not None and size != grant.size:
                raise BadDigest(f"the body is {size} bytes, the URL was signed for {grant.size}")
            sha256 = digest.hexdigest()  # the hex CRC32 for a crc32 part (only ever its ETag)
            if grant.sha256 is not None and sha256 != grant.sha256:
                raise BadDigest("the body's SHA-256 does not match the one signed into the URL")
            if grant.crc32 is not None and sha256 != crc32_b64_to_hex(grant.crc32):
                raise BadDigest("the body's CRC32 does not match the one signed into the URL")
            if upload_dir is not None and grant.part_number is not None:
                part_path = self._files.part_path(upload_dir, grant.part_number)
                try:
                    await anyio.to_thread.run_sync(os.replace, temp, part_path)
                except FileNotFoundError as exc:  # aborted while we were receiving
                    raise NoSuchUpload("the multipart upload was aborted") from exc
            else:
                await anyio.to_thread.run_sync(self._files.publish, temp, grant.key, size, sha256)
            published = True
            return f'"{sha256}"'
        finally:
            if not published:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._files.discard, file, temp)


if TYPE_CHECKING:

    def _satisfies_protocol(storage: LocalStorage) -> Storage:
        return storage
