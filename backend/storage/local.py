"""The embedded default: objects on the server's own disk, uploaded through URLs the server signs.

Layout under ``root``::

    objects/<key>                 the object's bytes (published once, never overwritten)
    meta/<key>                    JSON sidecar {"size", "sha256"}, so ``head`` never re-reads an object
    uploads/<upload id>/upload.json   multipart manifest {"key", "created", "checksum"}
    uploads/<upload id>/00001     part 1 (a re-sent part replaces the earlier one)
    tmp/                          bodies being received or assembled (same filesystem as objects/)

URLs copy the guarantees of S3 presigning: ``{base_url}/storage/o/{key}?X-Backapp-…`` carries an
HMAC-SHA256, under a key derived from the server secret, over the method, the exact key, the expiry
and every constraint (size, SHA-256 or a part's CRC32, upload id, part number, download name), so
changing any of them breaks the signature. :meth:`LocalStorage.verify` checks a URL;
:meth:`LocalStorage.receive` stores a body; the HTTP side lives in :mod:`backend.storage.local_routes`.

Every blocking file operation runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import zlib
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote, urlencode

import anyio
import anyio.to_thread

from .base import (
    MAX_PARTS,
    MIN_PART_SIZE,
    AccessDenied,
    BadDigest,
    CompletedPart,
    InvalidParts,
    NoSuchUpload,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    ObjectStoreUnavailable,
    PartChecksum,
    PresignedRequest,
    check_part_order,
    content_disposition,
    crc32_b64_to_hex,
    validate_crc32_b64,
    validate_expires_in,
    validate_key,
    validate_sha256_hex,
)

if TYPE_CHECKING:
    from .base import Storage

__all__ = [
    "ROUTE_PREFIX",
    "Grant",
    "LocalStorage",
    "canonical_string",
]

ROUTE_PREFIX = "/storage/o"
"""Where :func:`backend.storage.local_routes.local_storage_handlers` serves objects."""

P_METHOD = "X-Backapp-Method"
P_EXPIRES = "X-Backapp-Expires"
P_SIZE = "X-Backapp-Size"
P_SHA256 = "X-Backapp-Sha256"
P_CRC32 = "X-Backapp-Crc32"
P_UPLOAD = "X-Backapp-Upload"
P_PART = "X-Backapp-Part"
P_FILENAME = "X-Backapp-Filename"
P_SIGNATURE = "X-Backapp-Signature"
_PARAMS = frozenset(
    {P_METHOD, P_EXPIRES, P_SIZE, P_SHA256, P_CRC32, P_UPLOAD, P_PART, P_FILENAME, P_SIGNATURE}
)

_SCHEME = "BACKAPP-HMAC-SHA256-V1"
_KEY_DERIVATION_LABEL = b"backapp local-storage url signing v1"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
_MAX_SEGMENT_BYTES = 255  # a file name on every filesystem we care about


@dataclass(frozen=True)
class Grant:
    """What one signed URL allows: one method on one key until ``expires``, within its constraints."""

    method: str
    key: str
    expires: int
    """Unix time (seconds) from which the URL is refused."""
    size: int | None = None
    sha256: str | None = None
    upload_id: str | None = None
    part_number: int | None = None
    filename: str | None = None
    crc32: str | None = None
    """Base64 CRC32 (S3's form) a part's body must have (an upload with ``crc32`` parts)."""


def canonical_string(grant: Grant) -> str:
    """The text the signature covers: every field on its own line, absent ones empty.

    Keys and file names cannot contain a newline (control characters are refused), so the lines are
    unambiguous. ``crc32`` adds a last line only when set, so the URLs signed before it existed stay
    valid.
    """

    def text(value: object | None) -> str:
        return "" if value is None else str(value)

    lines = [
        _SCHEME,
        f"method:{grant.method}",
        f"key:{grant.key}",
        f"expires:{grant.expires}",
        f"size:{text(grant.size)}",
        f"sha256:{text(grant.sha256)}",
        f"upload:{text(grant.upload_id)}",
        f"part:{text(grant.part_number)}",
        f"filename:{text(grant.filename)}",
    ]
    if grant.crc32 is not None:
        lines.append(f"crc32:{grant.crc32}")
    return "\n".join(lines)


def _parse_int(value: str, name: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise AccessDenied(f"{name} is not a number")
    return int(value)


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
        if not secret:
            raise ValueError("secret must not be empty")
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        self.min_part_size = min_part_size
        self._clock = clock
        self._signing_key = hmac.new(secret, _KEY_DERIVATION_LABEL, hashlib.sha256).digest()
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"
        self._uploads = self.root / "uploads"
        self._tmp = self.root / "tmp"
        for directory in (self._objects, self._meta, self._uploads, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r}, base_url={self.base_url!r})"

    # -- signing (pure computation) ------------------------------------------------------------

    def signature(self, grant: Grant) -> str:
        """Hex HMAC-SHA256 of :func:`canonical_string`."""
        message = canonical_string(grant).encode("utf-8")
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def url_for(self, grant: Grant) -> str:
        """The signed URL of ``grant``."""
        params: list[tuple[str, str]] = [(P_METHOD, grant.method), (P_EXPIRES, str(grant.expires))]
        if grant.size is not None:
            params.append((P_SIZE, str(grant.size)))
        if grant.sha256 is not None:
            params.append((P_SHA256, grant.sha256))
        if grant.crc32 is not None:
            params.append((P_CRC32, grant.crc32))
        if grant.upload_id is not None:
            params.append((P_UPLOAD, grant.upload_id))
        if grant.part_number is not None:
            params.append((P_PART, str(grant.part_number)))
        if grant.filename is not None:
            params.append((P_FILENAME, grant.filename))
        params.append((P_SIGNATURE, self.signature(grant)))
        path = quote(grant.key, safe="/")
        return f"{self.base_url}{ROUTE_PREFIX}/{path}?{urlencode(params, quote_via=quote)}"

    def _presign(self, grant: Grant, headers: dict[str, str]) -> PresignedRequest:
        return PresignedRequest(
            url=self.url_for(grant),
            method=grant.method,
            headers=headers,
            expires_at=datetime.fromtimestamp(grant.expires, UTC),
        )

    def _expires(self, expires_in: int) -> int:
        return int(self._clock()) + validate_expires_in(expires_in)

    def presign_put(
        self, key: str, *, expires_in: int, size: int | None = None, sha256: str | None = None
    ) -> PresignedRequest:
        self._validate_key(key)
        if size is not None and size < 0:
            raise ValueError("size must not be negative")
        grant = Grant(
            method="PUT",
            key=key,
            expires=self._expires(expires_in),
            size=size,
            sha256=None if sha256 is None else validate_sha256_hex(sha256),
        )
        return self._presign(grant, {})

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        self._validate_key(key)
        if download_name is not None:
            content_disposition(download_name)  # refuses names that cannot be a header
        grant = Grant(
            method="GET", key=key, expires=self._expires(expires_in), filename=download_name
        )
        return self._presign(grant, {})

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
        self._validate_key(key)
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise ValueError("upload_id is not an id this storage issued")
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"part_number must be between 1 and {MAX_PARTS}")
        if size < 0:
            raise ValueError("size must not be negative")
        if (sha256 is None) == (crc32 is None):
            raise ValueError("a part URL needs exactly one of sha256 and crc32")
        grant = Grant(
            method="PUT",
            key=key,
            expires=self._expires(expires_in),
            size=size,
            sha256=None if sha256 is None else validate_sha256_hex(sha256),
            upload_id=upload_id,
            part_number=part_number,
            crc32=None if crc32 is None else validate_crc32_b64(crc32),
        )
        return self._presign(grant, {})

    def verify(self, method: str, key: str, query: Iterable[tuple[str, str]]) -> Grant:
        """The :class:`Grant` a request carries, or :class:`AccessDenied` saying why not.

        ``method`` is the request's method (a HEAD is checked as the GET it previews); ``key`` the
        decoded path after the route prefix; ``query`` the decoded query parameters, in order.
        """
        values: dict[str, str] = {}
        for name, value in query:
            if name in _PARAMS:
                if name in values:
                    raise AccessDenied(f"{name} is given twice")
                values[name] = value
        signature = values.get(P_SIGNATURE, "")
        if not _SIGNATURE.fullmatch(signature):
            raise AccessDenied("the URL is not signed")
        signed_method = values.get(P_METHOD, "")
        expected_method = "GET" if method == "HEAD" else method
        if signed_method != expected_method:
            raise AccessDenied(f"this URL is for {signed_method or 'another method'}, not {method}")

        def optional(name: str) -> str | None:
            value = values.get(name)
            return value or None

        size = optional(P_SIZE)
        part = optional(P_PART)
        grant = Grant(
            method=signed_method,
            key=key,
            expires=_parse_int(values.get(P_EXPIRES, ""), P_EXPIRES),
            size=None if size is None else _parse_int(size, P_SIZE),
            sha256=optional(P_SHA256),
            upload_id=optional(P_UPLOAD),
            part_number=None if part is None else _parse_int(part, P_PART),
            filename=optional(P_FILENAME),
            crc32=optional(P_CRC32),
        )
        if not hmac.compare_digest(self.signature(grant), signature):
            raise AccessDenied("the URL's signature does not match (altered, or for another key)")
        if self._clock() >= grant.expires:
            raise AccessDenied("the URL has expired; ask the server for a new one")
        return grant

    # -- paths ---------------------------------------------------------------------------------

    def _validate_key(self, key: str) -> str:
        validate_key(key)
        if any(len(segment.encode("utf-8")) > _MAX_SEGMENT_BYTES for segment in key.split("/")):
            raise ValueError(f"object key has a segment longer than {_MAX_SEGMENT_BYTES} bytes")
        return key

    def object_path(self, key: str) -> Path:
        """Where the object at ``key`` lives (whether or not it exists)."""
        return self._objects.joinpath(*self._validate_key(key).split("/"))

    def _meta_path(self, key: str) -> Path:
        return self._meta.joinpath(*key.split("/"))

    def _upload_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id):
            # Also what keeps an upload id from naming a path outside uploads/.
            raise NoSuchUpload("the multipart upload does not exist")
        return self._uploads / upload_id

    @staticmethod
    def _part_path(upload_dir: Path, part_number: int) -> Path:
        return upload_dir / f"{part_number:05d}"

    def _load_upload(self, key: str, upload_id: str) -> Path:
        return self._load_manifest(key, upload_id)[0]

    def _load_manifest(self, key: str, upload_id: str) -> tuple[Path, PartChecksum]:
        """The upload's directory and the checksum its parts carry (``sha256`` for a manifest
        written before the choice existed)."""
        upload_dir = self._upload_dir(upload_id)
        try:
            manifest = json.loads((upload_dir / "upload.json").read_text("utf-8"))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NoSuchUpload("the multipart upload does not exist") from exc
        except (OSError, ValueError) as exc:
            raise ObjectStoreError(f"the manifest of upload {upload_id} is unreadable") from exc
        if manifest.get("key") != key:
            raise NoSuchUpload("the multipart upload does not exist for this key")
        checksum: PartChecksum = "crc32" if manifest.get("checksum") == "crc32" else "sha256"
        return upload_dir, checksum

    # -- blocking helpers (run in worker threads) ----------------------------------------------

    def _new_temp(self, directory: Path) -> tuple[IO[bytes], Path]:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        return os.fdopen(fd, "wb"), Path(name)

    @staticmethod
    def _discard(file: IO[bytes] | None, path: Path | None) -> None:
        if file is not None:
            file.close()
        if path is not None:
            path.unlink(missing_ok=True)

    def _read_meta(self, key: str, size: int) -> str | None:
        try:
            meta = json.loads(self._meta_path(key).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("size") != size:
            return None
        sha256 = meta.get("sha256")
        return sha256 if isinstance(sha256, str) and len(sha256) == 64 else None

    def _write_meta(self, key: str, size: int, sha256: str) -> None:
        path = self._meta_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=".meta-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"size": size, "sha256": sha256}, file)
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def _publish(self, temp: Path, key: str, size: int, sha256: str) -> None:
        """Move a finished body to ``objects/<key>`` unless something is there already.

        ``os.link`` fails when the name exists, so of two racing uploads exactly one wins; a rename
        would silently replace. The sidecar is written after the object: an object whose sidecar a
        crash lost is re-hashed once by ``head``.
        """
        dest = self.object_path(key)
        try:
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise ObjectExists(f"{key}: a prefix of this key is an existing object") from exc
            try:
                os.link(temp, dest)
            except FileExistsError as exc:
                raise ObjectExists(f"{key} already holds an object") from exc
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # A filesystem without hard links: claim the name exclusively, then fill it.
                try:
                    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError as exc2:
                    raise ObjectExists(f"{key} already holds an object") from exc2
                os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)
        self._write_meta(key, size, sha256)

    def _head_sync(self, key: str) -> ObjectInfo | None:
        path = self.object_path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        sha256 = self._read_meta(key, stat.st_size)
        if sha256 is None:
            # Only after a crash between publishing and writing the sidecar: hash once, remember.
            digest = hashlib.sha256()
            with path.open("rb") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
            sha256 = digest.hexdigest()
            self._write_meta(key, stat.st_size, sha256)
        return ObjectInfo(size=stat.st_size, sha256=sha256)

    def _create_multipart_sync(self, key: str, checksum: PartChecksum) -> str:
        upload_id = secrets.token_hex(16)
        upload_dir = self._uploads / upload_id
        upload_dir.mkdir()
        manifest = {"key": key, "created": int(self._clock()), "checksum": checksum}
        (upload_dir / "upload.json").write_text(json.dumps(manifest), "utf-8")
        return upload_id

    def _complete_sync(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        upload_dir, checksum = self._load_manifest(key, upload_id)
        check_part_order(parts, checksum)
        paths: list[Path] = []
        expected: list[str] = []
        for index, part in enumerate(parts):
            path = self._part_path(upload_dir, part.part_number)
            try:
                size = path.stat().st_size
            except FileNotFoundError as exc:
                raise InvalidParts(f"part {part.part_number} was not uploaded") from exc
            # Our ETag is the part's quoted hex SHA-256 or CRC32 (see receive).
            if part.crc32 is not None:
                digest_hex = crc32_b64_to_hex(part.crc32)
            else:
                assert part.sha256 is not None
                digest_hex = part.sha256.lower()
            expected.append(digest_hex)
            if part.etag.strip().strip('"').lower() != digest_hex:
                raise InvalidParts(
                    f"part {part.part_number}: the ETag does not match its {checksum}"
                )
            if index < len(parts) - 1 and size < self.min_part_size:
                raise InvalidParts(
                    f"part {part.part_number} is {size} bytes; every part but the last must be "
                    f"at least {self.min_part_size} bytes"
                )
            paths.append(path)

        file, temp = self._new_temp(self._tmp)
        try:
            whole = hashlib.sha256()
            total = 0
            for part, path, digest_hex in zip(parts, paths, expected, strict=True):
                digest = _PartDigest(checksum)
                with path.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        file.write(chunk)
                        total += len(chunk)
                if digest.hexdigest() != digest_hex:
                    raise InvalidParts(
                        f"part {part.part_number}: its content does not match its {checksum}"
                    )
            _sync_and_close(file)
            sha256 = whole.hexdigest()
            self._publish(temp, key, total, sha256)
        except BaseException:
            self._discard(file, temp)
            raise
        shutil.rmtree(upload_dir, ignore_errors=True)
        return ObjectInfo(size=total, sha256=sha256)

    def _abort_sync(self, key: str, upload_id: str) -> None:
        upload_dir = self._load_upload(key, upload_id)
        shutil.rmtree(upload_dir, ignore_errors=True)

    def _delete_sync(self, key: str) -> None:
        path = self.object_path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._meta_path(key).unlink()

    def _check_sync(self) -> None:
        for directory in (self._objects, self._meta, self._uploads, self._tmp):
            if not directory.is_dir():
                raise ObjectStoreUnavailable(f"local storage directory {directory} is missing")
        probe, path = self._new_temp(self._tmp)
        self._discard(probe, path)

    # -- the Storage protocol ------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        self._validate_key(key)
        return await anyio.to_thread.run_sync(self._head_sync, key)

    async def create_multipart(self, key: str, *, checksum: PartChecksum = "sha256") -> str:
        self._validate_key(key)
        if checksum not in ("sha256", "crc32"):
            raise ValueError(f"unknown part checksum {checksum!r}")
        return await anyio.to_thread.run_sync(self._create_multipart_sync, key, checksum)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        self._validate_key(key)
        return await anyio.to_thread.run_sync(self._complete_sync, key, upload_id, list(parts))

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._validate_key(key)
        await anyio.to_thread.run_sync(self._abort_sync, key, upload_id)

    async def delete(self, key: str) -> None:
        self._validate_key(key)
        await anyio.to_thread.run_sync(self._delete_sync, key)

    async def check(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._check_sync)
        except OSError as exc:
            raise ObjectStoreUnavailable(
                f"local storage at {self.root} is not writable ({exc})"
            ) from exc

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
                self._load_manifest, grant.key, grant.upload_id
            )
            signed = "crc32" if grant.crc32 is not None else "sha256"
            if signed != checksum or (grant.sha256 is not None and grant.crc32 is not None):
                raise AccessDenied(
                    f"this upload's parts carry {checksum}, the URL another checksum"
                )
        elif grant.crc32 is not None:
            raise AccessDenied("only a part URL carries a crc32")
        elif await self.head(grant.key) is not None:
            # Fail before reading a body that could never be published; _publish re-checks.
            raise ObjectExists(f"{grant.key} already holds an object")

        out, temp = await anyio.to_thread.run_sync(self._new_temp, upload_dir or self._tmp)
        file: IO[bytes] | None = out
        published = False
        try:
            digest = _PartDigest(checksum)
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
                if len(pending) >= _CHUNK:
                    await anyio.to_thread.run_sync(write, bytes(pending))
                    pending.clear()
            if pending:
                await anyio.to_thread.run_sync(write, bytes(pending))
            await anyio.to_thread.run_sync(_sync_and_close, out)
            file = None
            if grant.size is not None and size != grant.size:
                raise BadDigest(f"the body is {size} bytes, the URL was signed for {grant.size}")
            sha256 = digest.hexdigest()  # the hex CRC32 for a crc32 part (only ever its ETag)
            if grant.sha256 is not None and sha256 != grant.sha256:
                raise BadDigest("the body's SHA-256 does not match the one signed into the URL")
            if grant.crc32 is not None and sha256 != crc32_b64_to_hex(grant.crc32):
                raise BadDigest("the body's CRC32 does not match the one signed into the URL")
            if upload_dir is not None and grant.part_number is not None:
                part_path = self._part_path(upload_dir, grant.part_number)
                try:
                    await anyio.to_thread.run_sync(os.replace, temp, part_path)
                except FileNotFoundError as exc:  # aborted while we were receiving
                    raise NoSuchUpload("the multipart upload was aborted") from exc
            else:
                await anyio.to_thread.run_sync(self._publish, temp, grant.key, size, sha256)
            published = True
            return f'"{sha256}"'
        finally:
            if not published:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._discard, file, temp)


class _PartDigest:
    """SHA-256 or CRC32 of a stream, as lower-case hex."""

    def __init__(self, checksum: PartChecksum) -> None:
        self._sha = hashlib.sha256() if checksum == "sha256" else None
        self._crc = 0

    def update(self, data: bytes) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def hexdigest(self) -> str:
        if self._sha is not None:
            return self._sha.hexdigest()
        return f"{self._crc:08x}"


def _sync_and_close(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


if TYPE_CHECKING:

    def _satisfies_protocol(storage: LocalStorage) -> Storage:
        return storage
