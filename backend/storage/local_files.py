"""The local backend's files: where objects, their sidecars and multipart uploads lie on disk.

Layout under ``root``::

    objects/<key>                 the object's bytes (published once, never overwritten)
    meta/<key>                    JSON sidecar {"size", "sha256"}, so ``head`` never re-reads an object
    uploads/<upload id>/upload.json   multipart manifest {"key", "created", "checksum"}
    uploads/<upload id>/00001     part 1 (a re-sent part replaces the earlier one)
    tmp/                          bodies being received or assembled (same filesystem as objects/)

Every method here blocks: :class:`~backend.storage.local.LocalStorage` calls them in worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ..private_files import DIR_MODE, FILE_MODE, make_private_dir
from .base import (
    CompletedPart,
    InvalidParts,
    ListedObject,
    Listing,
    NoSuchKey,
    NoSuchUpload,
    ObjectChecksumMismatch,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    ObjectStoreUnavailable,
    PartChecksum,
    check_part_order,
    crc32_b64,
    crc32_b64_to_hex,
    validate_key,
)

__all__ = ["CHUNK", "FileStore", "PartDigest", "sync_and_close"]

CHUNK = 1024 * 1024
"""How much one read or write moves."""
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_MAX_SEGMENT_BYTES = 255  # a file name on every filesystem we care about


class FileStore:
    """The directory tree of the local backend and the blocking operations on it."""

    def __init__(self, root: Path, *, min_part_size: int, clock: Callable[[], float]) -> None:
        self.root = Path(root)
        self.min_part_size = min_part_size
        self._clock = clock
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"
        self._uploads = self.root / "uploads"
        self.tmp = self.root / "tmp"
        for directory in (self._objects, self._meta, self._uploads, self.tmp):
            make_private_dir(directory)

    # -- paths ---------------------------------------------------------------------------------

    @staticmethod
    def check_key(key: str) -> str:
        """``key`` when it is a valid object key that fits a file name per segment, else
        ``ValueError``."""
        validate_key(key)
        if any(len(segment.encode("utf-8")) > _MAX_SEGMENT_BYTES for segment in key.split("/")):
            raise ValueError(f"object key has a segment longer than {_MAX_SEGMENT_BYTES} bytes")
        return key

    @staticmethod
    def is_upload_id(upload_id: str) -> bool:
        """Whether ``upload_id`` has the form of the ids :meth:`create_multipart` issues."""
        return _UPLOAD_ID.fullmatch(upload_id) is not None

    def object_path(self, key: str) -> Path:
        """Where the object at ``key`` lives (whether or not it exists)."""
        return self._objects.joinpath(*self.check_key(key).split("/"))

    def _meta_path(self, key: str) -> Path:
        return self._meta.joinpath(*key.split("/"))

    def _upload_dir(self, upload_id: str) -> Path:
        if not self.is_upload_id(upload_id):
            # Also what keeps an upload id from naming a path outside uploads/.
            raise NoSuchUpload("the multipart upload does not exist")
        return self._uploads / upload_id

    @staticmethod
    def part_path(upload_dir: Path, part_number: int) -> Path:
        """Where part ``part_number`` of the upload in ``upload_dir`` is kept."""
        return upload_dir / f"{part_number:05d}"

    def load_manifest(self, key: str, upload_id: str) -> tuple[Path, PartChecksum]:
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

    # -- temporary files -----------------------------------------------------------------------

    @staticmethod
    def new_temp(directory: Path) -> tuple[IO[bytes], Path]:
        """A new file in ``directory`` to write a body into, and its path."""
        fd, name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        return os.fdopen(fd, "wb"), Path(name)

    @contextlib.contextmanager
    def staged(self) -> Iterator[tuple[IO[bytes], Path]]:
        """A new temporary file (and its path) to write a body into before ``publish``; closed and
        removed when the block fails, whether before or in ``publish``."""
        file, temp = self.new_temp(self.tmp)
        try:
            yield file, temp
        except BaseException:
            self.discard(file, temp)
            raise

    @staticmethod
    def discard(file: IO[bytes] | None, path: Path | None) -> None:
        """Close and remove a temporary file (either may already be gone)."""
        if file is not None:
            file.close()
        if path is not None:
            path.unlink(missing_ok=True)

    # -- objects -------------------------------------------------------------------------------

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
        make_private_dir(path.parent)
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=".meta-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"size": size, "sha256": sha256}, file)
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def publish(self, temp: Path, key: str, size: int, sha256: str) -> None:
        """Move a finished body to ``objects/<key>`` unless something is there already.

        ``os.link`` fails when the name exists, so of two racing uploads exactly one wins; a rename
        would silently replace. The sidecar is written after the object: an object whose sidecar a
        crash lost is re-hashed once by ``head``.
        """
        dest = self.object_path(key)
        try:
            try:
                make_private_dir(dest.parent)
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
                    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
                except FileExistsError as exc2:
                    raise ObjectExists(f"{key} already holds an object") from exc2
                os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)
        self._write_meta(key, size, sha256)

    def head(self, key: str) -> ObjectInfo | None:
        """Size and SHA-256 of the object at ``key``, or None when there is none."""
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
                while chunk := file.read(CHUNK):
                    digest.update(chunk)
            sha256 = digest.hexdigest()
            self._write_meta(key, stat.st_size, sha256)
        return ObjectInfo(size=stat.st_size, sha256=sha256)

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` and its sidecar (nothing there is fine)."""
        path = self.object_path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._meta_path(key).unlink()

    def store(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        """Publish an object the server writes itself (never overwriting one)."""
        self.check_key(key)
        with self.staged() as (file, temp):
            digest = hashlib.sha256()
            size = 0
            for chunk in chunks:
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
            sync_and_close(file)
            sha256 = digest.hexdigest()
            self.publish(temp, key, size, sha256)
        return ObjectInfo(size=size, sha256=sha256)

    def copy_out(self, key: str, target: Path) -> int:
        """Copy the object at ``key`` to ``target``; its size (:class:`NoSuchKey` when absent)."""
        try:
            with self.object_path(key).open("rb") as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NoSuchKey(f"there is no object at {key}") from exc
        return target.stat().st_size

    def list(self, prefix: str, delimiter: str | None) -> Listing:
        """Objects under ``prefix`` (a plain string prefix of the key); with ``delimiter``, one
        level of them and the next level's prefixes."""
        # Walk from the deepest folder the prefix names whole.
        folder, _, _ = prefix.rpartition("/")
        start = self._objects.joinpath(*folder.split("/")) if folder else self._objects
        objects: list[ListedObject] = []
        prefixes: set[str] = set()
        for directory, dirs, files in os.walk(start):
            relative = Path(directory).relative_to(self._objects).as_posix()
            base = "" if relative == "." else relative + "/"
            for name in files:
                key = base + name
                if not key.startswith(prefix):
                    continue
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                    continue
                stat = (Path(directory) / name).stat()
                objects.append(
                    ListedObject(
                        key=key,
                        size=stat.st_size,
                        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                    )
                )
            dirs.sort()
        objects.sort(key=lambda o: o.key)
        return Listing(objects=objects, prefixes=sorted(prefixes))

    def check(self) -> None:
        """:class:`ObjectStoreUnavailable` unless every directory is there and ``tmp`` is
        writable (an ``OSError`` when it is not)."""
        for directory in (self._objects, self._meta, self._uploads, self.tmp):
            if not directory.is_dir():
                raise ObjectStoreUnavailable(f"local storage directory {directory} is missing")
        probe, path = self.new_temp(self.tmp)
        self.discard(probe, path)

    # -- multipart uploads ---------------------------------------------------------------------

    def create_multipart(self, key: str, checksum: PartChecksum) -> str:
        """A new upload's id, its manifest written."""
        upload_id = secrets.token_hex(16)
        upload_dir = self._uploads / upload_id
        upload_dir.mkdir(mode=DIR_MODE)
        os.chmod(upload_dir, DIR_MODE)
        manifest = {"key": key, "created": int(self._clock()), "checksum": checksum}
        fd = os.open(upload_dir / "upload.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(manifest))
        return upload_id

    def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        object_crc32: str | None = None,
    ) -> ObjectInfo:
        """Check every part against its ETag and checksum, join them and publish the object;
        with ``object_crc32`` (CRC32 parts), only if the whole object has that CRC32."""
        upload_dir, checksum = self.load_manifest(key, upload_id)
        if object_crc32 is not None:
            if checksum != "crc32":
                raise InvalidParts("a whole-object CRC32 is for uploads with CRC32 parts")
            crc32_b64_to_hex(object_crc32)  # ValueError when malformed
        check_part_order(parts, checksum)
        paths: list[Path] = []
        expected: list[str] = []
        for index, part in enumerate(parts):
            path = self.part_path(upload_dir, part.part_number)
            try:
                size = path.stat().st_size
            except FileNotFoundError as exc:
                raise InvalidParts(f"part {part.part_number} was not uploaded") from exc
            # Our ETag is the part's quoted hex SHA-256 or CRC32 (see LocalStorage.receive).
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

        with self.staged() as (file, temp):
            whole = hashlib.sha256()
            whole_crc = 0
            total = 0
            for part, path, digest_hex in zip(parts, paths, expected, strict=True):
                digest = PartDigest(checksum)
                with path.open("rb") as source:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        if checksum == "crc32":
                            whole_crc = zlib.crc32(chunk, whole_crc)
                        file.write(chunk)
                        total += len(chunk)
                if digest.hexdigest() != digest_hex:
                    raise InvalidParts(
                        f"part {part.part_number}: its content does not match its {checksum}"
                    )
            crc32 = crc32_b64(whole_crc) if checksum == "crc32" else None
            if object_crc32 is not None and crc32 != object_crc32:
                raise ObjectChecksumMismatch(
                    f"the parts make an object whose CRC32 is {crc32}, not {object_crc32}: "
                    "they are not the stream the client checksummed"
                )
            sync_and_close(file)
            sha256 = whole.hexdigest()
            self.publish(temp, key, total, sha256)
        shutil.rmtree(upload_dir, ignore_errors=True)
        return ObjectInfo(size=total, sha256=sha256, crc32=crc32)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Remove the upload and every part received for it."""
        upload_dir, _ = self.load_manifest(key, upload_id)
        shutil.rmtree(upload_dir, ignore_errors=True)


class PartDigest:
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


def sync_and_close(file: IO[bytes]) -> None:
    """Flush ``file`` to the disk and close it: a published object survives a power cut."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
