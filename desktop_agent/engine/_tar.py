"""A streaming POSIX (pax) tar writer.

``tar_header`` is a pure builder: one member's header blocks (a pax extended header first when a name,
a link target or a number does not fit a plain ustar header). ``Archiver`` turns scanned entries into a
tar byte stream, handed chunk by chunk to ``write``; it never holds more than one chunk of a file.

A file that changes while it is read must not corrupt the stream, since the header (with the size) is
written before the content:

- Files up to ``small_file`` bytes are read whole before their header is written, so the header always
  states what was actually read.
- Larger files are streamed: if one shrinks, the missing tail is written as zeros (the size in the
  header stays right); if one grows, only the size it had when opened is archived.

Either way the file is reported as a per-file error. Symlinks are archived as links (their target is
never opened), hard links as links to the first copy archived.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ._cancel import CancelToken
from ._errors import unreadable_text
from ._scanner import EntryKind, ScanEntry
from .protocol import FileError

__all__ = ["Archiver", "ArchiveStats", "member_name", "pax_record", "tar_header"]

BLOCK = 512
RECORD = 20 * BLOCK
NUL_BLOCK = bytes(BLOCK)

REGTYPE, LNKTYPE, SYMTYPE, DIRTYPE, PAXTYPE = b"0", b"1", b"2", b"5", b"x"

_MAX_OCTAL_8 = 0o7777777
_MAX_OCTAL_12 = 0o77777777777

_O_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the scan must not block the backup
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def pax_record(key: bytes, value: bytes) -> bytes:
    """One pax extended-header record: ``"<length> <key>=<value>\\n"``, the length counting itself.

    >>> pax_record(b"path", b"a")
    b'9 path=a\\n'
    """
    payload = b" " + key + b"=" + value + b"\n"
    length = len(payload) + 1
    while len(str(length)) + len(payload) != length:
        length = len(str(length)) + len(payload)
    return str(length).encode("ascii") + payload


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# name, mode, uid, gid, size, mtime, checksum, type, linkname, magic+version, uname, gname,
# devmajor, devminor, prefix, padding: 512 bytes; "s" fields are NUL-padded (and cut) by struct.
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12s")
# the fields after the checksum: type, linkname, magic+version, uname, gname, devmajor, devminor,
# prefix, padding
_USTAR_TAIL = struct.Struct("c100s8s32s32s8s8s155s12s")


def _ustar_block(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
) -> bytes:
    header = bytearray(
        _USTAR.pack(
            name,
            b"%07o\0" % mode,
            b"%07o\0" % uid,
            b"%07o\0" % gid,
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b"        ",  # the checksum is computed with eight spaces here
            typeflag,
            linkname,
            b"ustar\x0000",
            uname,
            gname,
            b"",  # devmajor, devminor: empty (no device files are archived)
            b"",
            b"",
            b"",
        )
    )
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tar_header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    uname: str = "",
    gname: str = "",
) -> bytes:
    """The header block(s) of one member: a pax extended header (type ``x``) when needed, then the
    ustar header.

    A pax header is added when the name is over 100 bytes or not ASCII, the link target is over 100
    bytes or not ASCII, the user or group name does not fit, or a number does not fit its octal field
    (files of 8 GiB and more, negative or far-future mtimes, large uids). Names that are not valid UTF-8
    (possible on Linux) are stored as raw bytes with ``hdrcharset=BINARY``.
    """
    records: list[bytes] = []
    binary = not (_is_utf8(name) and _is_utf8(linkname))
    if binary:
        records.append(pax_record(b"hdrcharset", b"BINARY"))
    if len(name) > 100 or not name.isascii():
        records.append(pax_record(b"path", name))
    if len(linkname) > 100 or not linkname.isascii():
        records.append(pax_record(b"linkpath", linkname))
    if size > _MAX_OCTAL_12:
        records.append(pax_record(b"size", b"%d" % size))
    if not 0 <= mtime <= _MAX_OCTAL_12:
        records.append(pax_record(b"mtime", b"%d" % mtime))
    for key, number in ((b"uid", uid), (b"gid", gid)):
        if not 0 <= number <= _MAX_OCTAL_8:
            records.append(pax_record(key, b"%d" % number))
    uname_raw = uname.encode("utf-8", "surrogateescape")
    gname_raw = gname.encode("utf-8", "surrogateescape")
    if len(uname_raw) > 32 or not uname_raw.isascii():
        records.append(pax_record(b"uname", uname_raw))
        uname_raw = b""
    if len(gname_raw) > 32 or not gname_raw.isascii():
        records.append(pax_record(b"gname", gname_raw))
        gname_raw = b""

    def clamp(value: int, top: int) -> int:
        return value if 0 <= value <= top else 0

    member = _ustar_block(
        name,
        typeflag,
        mode=mode & 0o7777,
        uid=clamp(uid, _MAX_OCTAL_8),
        gid=clamp(gid, _MAX_OCTAL_8),
        size=clamp(size, _MAX_OCTAL_12),
        mtime=clamp(mtime, _MAX_OCTAL_12),
        linkname=linkname,
        uname=uname_raw,
        gname=gname_raw,
    )
    if not records:
        return member
    data = b"".join(records)
    pax = _ustar_block(
        b"././@PaxHeader",
        PAXTYPE,
        mode=0o644,
        uid=0,
        gid=0,
        size=len(data),
        mtime=clamp(mtime, _MAX_OCTAL_12),
        linkname=b"",
        uname=b"",
        gname=b"",
    )
    return pax + data + bytes(-len(data) % BLOCK) + member


def member_name(path: str, *, is_dir: bool = False) -> bytes:
    """The member name of an absolute path: the path without its root, as GNU tar stores it (so
    several sources never collide), ``/``-separated, with a trailing ``/`` for folders.

    >>> member_name("/home/me/Documents", is_dir=True)
    b'home/me/Documents/'
    """
    if os.sep != "/":  # Windows: C:\\Users\\me -> C/Users/me
        drive, rest = os.path.splitdrive(path)
        path = drive.rstrip(":") + "/" + rest.replace(os.sep, "/")
    raw = os.fsencode(path).lstrip(b"/")
    if is_dir and raw:
        raw += b"/"
    return raw


def _member(path: str | bytes, *, is_dir: bool = False) -> bytes:
    """``member_name`` of a path given as text or as the raw bytes of the file system."""
    if isinstance(path, str):
        return member_name(path, is_dir=is_dir)
    if os.sep != "/":
        return member_name(os.fsdecode(path), is_dir=is_dir)
    raw = path.lstrip(b"/")
    return raw + b"/" if is_dir and raw else raw


@dataclass(slots=True)
class ArchiveStats:
    files: int = 0
    """Files, symlinks and hard links archived (folders not counted)."""
    dirs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    """Bytes of the (uncompressed) tar stream."""
    errors: list[FileError] = field(default_factory=list)
    error_count: int = 0


class _Names:
    """uid/gid to user/group names, cached (none on Windows)."""

    def __init__(self) -> None:
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self._users:
            try:
                import pwd

                self._users[uid] = pwd.getpwuid(uid).pw_name
            except (ImportError, KeyError):
                self._users[uid] = ""
        return self._users[uid]

    def group(self, gid: int) -> str:
        if gid not in self._groups:
            try:
                import grp

                self._groups[gid] = grp.getgrgid(gid).gr_name
            except (ImportError, KeyError):
                self._groups[gid] = ""
        return self._groups[gid]


class Archiver:
    """Writes scanned entries as a tar stream into ``write``.

    ``on_file(path, size)`` is called before each file is read, ``on_progress(stats)`` after each chunk
    (the caller throttles). Per-file problems are collected in ``stats.errors`` (at most
    ``max_errors`` kept; ``stats.error_count`` counts them all).

    ``write_content(data, start, end)``, if given, takes the place of ``write`` for a small file's
    member (header, content, padding in one piece), with ``data[start:end]`` its content: the
    compressor may then treat file contents apart (store what does not compress).
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        *,
        cancel: CancelToken | None = None,
        on_file: Callable[[str, int], None] | None = None,
        on_progress: Callable[[ArchiveStats], None] | None = None,
        on_error: Callable[[FileError], None] | None = None,
        chunk_size: int = 1024 * 1024,
        small_file: int = 1024 * 1024,
        max_errors: int = 1000,
        write_content: Callable[[bytes, int, int], None] | None = None,
    ) -> None:
        self._out = write
        self._out_content = write_content
        self._cancel = cancel
        self._on_file = on_file
        self._on_progress = on_progress
        self._on_error = on_error
        self._chunk = chunk_size
        self._small = small_file
        self._max_errors = max_errors
        self._names = _Names()
        self._links: dict[tuple[int, int], bytes] = {}
        # (mode, uid, gid) -> the constant parts of a regular file's ustar header, or None when
        # they need a pax header (see _file_header)
        self._templates: dict[tuple[int, int, int], tuple[bytes, bytes, int] | None] = {}
        self.stats = ArchiveStats()

    # -- output -------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out(data)
        self.stats.bytes_written += len(data)

    def error(self, path: str | bytes, message: str) -> None:
        """Record a per-file error (the archive goes on)."""
        problem = FileError(os.fsdecode(path), message)
        self.stats.error_count += 1
        if len(self.stats.errors) < self._max_errors:
            self.stats.errors.append(problem)
        if self._on_error is not None:
            self._on_error(problem)

    def _header(self, name: bytes, typeflag: bytes, st: os.stat_result, **kw: object) -> bytes:
        return tar_header(
            name,
            typeflag,
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=st.st_mtime_ns // 1_000_000_000,
            uname=self._names.user(st.st_uid),
            gname=self._names.group(st.st_gid),
            **kw,  # type: ignore[arg-type]
        )

    def _file_header(self, name: bytes, st: os.stat_result, size: int) -> bytes:
        """``_header(name, REGTYPE, st, size=size)``, built from a cached template when no pax
        header is needed (the common case), in about a third of the time."""
        mtime = st.st_mtime_ns // 1_000_000_000
        if (
            len(name) <= 100
            and name.isascii()
            and size <= _MAX_OCTAL_12
            and 0 <= mtime <= _MAX_OCTAL_12
        ):
            key = (st.st_mode, st.st_uid, st.st_gid)
            if key in self._templates:
                template = self._templates[key]
            else:
                template = self._templates[key] = self._template(st)
            if template is not None:
                ids, tail, fixed = template
                size_f = b"%011o\0" % size
                mtime_f = b"%011o\0" % mtime
                checksum = fixed + sum(name) + sum(size_f) + sum(mtime_f)
                return b"".join(
                    (name.ljust(100, b"\0"), ids, size_f, mtime_f, b"%06o\0 " % checksum, tail)
                )
        return self._header(name, REGTYPE, st, size=size)

    def _template(self, st: os.stat_result) -> tuple[bytes, bytes, int] | None:
        uname = self._names.user(st.st_uid).encode("utf-8", "surrogateescape")
        gname = self._names.group(st.st_gid).encode("utf-8", "surrogateescape")
        if not (
            0 <= st.st_uid <= _MAX_OCTAL_8
            and 0 <= st.st_gid <= _MAX_OCTAL_8
            and len(uname) <= 32
            and len(gname) <= 32
            and uname.isascii()
            and gname.isascii()
        ):
            return None
        ids = b"%07o\0%07o\0%07o\0" % (st.st_mode & 0o7777, st.st_uid, st.st_gid)
        tail = _USTAR_TAIL.pack(REGTYPE, b"", b"ustar\x0000", uname, gname, b"", b"", b"", b"")
        # the checksum field counts as eight spaces
        return ids, tail, sum(ids) + sum(tail) + 8 * ord(" ")

    # -- entries ------------------------------------------------------------------------------------

    def add(self, entry: ScanEntry) -> None:
        """Archive one scanned entry, as it is now on disk."""
        self.add_path(entry.kind, entry.path, entry.size, entry.mtime_ns)

    def add_path(
        self, kind: EntryKind, path: str | bytes, size: int = 0, mtime_ns: int = 0
    ) -> None:
        """``add`` without the ``ScanEntry``; ``path`` may be the raw bytes the scanner stored (the
        engine's way: no decoding and re-encoding of every path)."""
        if self._cancel is not None:
            self._cancel.raise_if_cancelled()
        try:
            if kind == "f":
                self._add_file(path, size, mtime_ns)
                return
            # Folders are followed: a source folder may be a symlink the user pointed at (the scanner
            # lists symlinks inside sources as "l", never as "d").
            st = os.stat(path) if kind == "d" else os.lstat(path)
        except OSError as exc:
            self.error(path, unreadable_text(exc, "vanished before it could be archived"))
            return
        self._add_stat(path, st)

    def _add_stat(self, path: str | bytes, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            name = _member(path, is_dir=True)
            if name:
                self._write(self._header(name, DIRTYPE, st))
                self.stats.dirs += 1
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.fsencode(os.readlink(os.fsdecode(path)))
            except OSError as exc:
                vanished = "vanished before it could be archived"
                self.error(path, unreadable_text(exc, vanished, "cannot read the link"))
                return
            self._write(self._header(_member(path), SYMTYPE, st, linkname=target))
            self.stats.files += 1
        elif stat.S_ISREG(st.st_mode):
            self._add_file(path, st.st_size, st.st_mtime_ns)
        # sockets, FIFOs, devices: not archived

    def _add_file(self, path: str | bytes, size: int, mtime_ns: int) -> None:
        try:
            fd = os.open(path, _O_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):  # replaced by a symlink since the scan
                try:
                    self._add_stat(path, os.lstat(path))
                except OSError as exc2:
                    self.error(path, f"cannot read: {exc2.strerror or exc2}")
                return
            self.error(path, unreadable_text(exc))
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._add_stat(path, st)
                return
            name = _member(path)
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self._links.get(key)
                if first is not None:
                    self._write(self._header(name, LNKTYPE, st, linkname=first))
                    self.stats.files += 1
                    return
            if self._on_file is not None:
                self._on_file(os.fsdecode(path), st.st_size)
            if size != st.st_size or mtime_ns != st.st_mtime_ns:
                self.error(
                    path,
                    f"changed since the scan (size {size} -> {st.st_size} bytes); "
                    "archived as it was when read",
                )
            if st.st_size <= self._small:
                ok = self._write_small(fd, path, name, st)
            else:
                ok = self._write_streamed(fd, path, name, st)
            if ok:
                after = os.fstat(fd)
                if after.st_size > st.st_size:
                    self.error(
                        path, f"grew while being read; archived its first {st.st_size} bytes"
                    )
                elif after.st_mtime_ns != st.st_mtime_ns or after.st_size != st.st_size:
                    self.error(
                        path, "changed while being read; the archived copy may be inconsistent"
                    )
            if st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = name
            self.stats.files += 1
        finally:
            os.close(fd)

    def _write_small(self, fd: int, path: str | bytes, name: bytes, st: os.stat_result) -> bool:
        # Read first, then write the header with the size actually read: always consistent. One
        # read normally suffices; growth shows in the fstat that follows (see _add_file).
        size = st.st_size
        parts: list[bytes] = []
        got = 0
        failure: OSError | None = None
        try:
            while got < size:
                chunk = os.read(fd, size - got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        except OSError as exc:
            failure = exc
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if got > size:  # never from a real read(); the header must match the content regardless
            data, got = data[:size], size
        ok = False
        if failure is not None:
            self.error(
                path, f"read error: {failure.strerror or failure}; archived the {got} bytes read"
            )
        elif got < size:
            self.error(path, f"shrank while being read ({size} -> {got} bytes)")
        else:
            ok = True
        header = self._file_header(name, st, got)
        # one write per member: header, content, padding
        if not got:
            self._write(header)
        elif self._out_content is not None:
            self._out_content(header + data + bytes(-got % BLOCK), len(header), len(header) + got)
            self.stats.bytes_written += len(header) + got + (-got % BLOCK)
        else:
            self._write(header + data + bytes(-got % BLOCK))
        self.stats.bytes_read += got
        if self._on_progress is not None:
            self._on_progress(self.stats)
        return ok

    def _write_streamed(self, fd: int, path: str | bytes, name: bytes, st: os.stat_result) -> bool:
        size = st.st_size
        self._write(self._file_header(name, st, size))
        remaining = size
        ok = True
        cancel = self._cancel
        while remaining:
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                chunk = os.read(fd, min(self._chunk, remaining))
            except OSError as exc:
                self.error(
                    path,
                    f"read error after {size - remaining} of {size} bytes: {exc.strerror or exc}; "
                    "the rest is zero-filled in the archive",
                )
                ok = False
                break
            if not chunk:
                self.error(
                    path,
                    f"shrank while being read ({size} -> {size - remaining} bytes); "
                    "the rest is zero-filled in the archive",
                )
                ok = False
                break
            self._write(chunk)
            remaining -= len(chunk)
            self.stats.bytes_read += len(chunk)
            self._progress()
        while remaining:  # keep the stream consistent with the header
            zeros = bytes(min(self._chunk, remaining))
            self._write(zeros)
            remaining -= len(zeros)
        if size % BLOCK:
            self._write(bytes(-size % BLOCK))
        return ok

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats)

    def finish(self) -> None:
        """End the archive: two zero blocks, padded to a 10 KiB record like GNU tar."""
        end = 2 * BLOCK
        end += -(self.stats.bytes_written + end) % RECORD
        self._write(bytes(end))
