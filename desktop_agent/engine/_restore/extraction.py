"""Writing a restore: members go into a hidden **staging folder** (beside or inside the target, so the
final move is a rename), and only a restore that was read and verified whole is moved into place;
on any error the staging folder is removed and the target is left as it was.

Nothing is written through a symbolic link; nothing is written below a member that was refused; and
once all members are written every symbolic link is resolved on disk and removed if it leads outside
the staging folder (this catches chains of links that each look harmless). An in-place restore
writes to the members' original absolute paths: there the "target" is ``/`` and links are kept.

Merging into a folder that already has files never loses one: a file that holds exactly the
backup's content is left alone; one that differs is kept, and the restored copy goes beside it as
``name (restored YYYY-MM-DD HH-MM-SS).ext`` (the rule snapshots follow too), unless ``overwrite``
asks to replace it.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import IO

from .._errors import RestoreError
from .planning import RestoreOptions, member_path

__all__ = ["CHUNK", "STAGING_PREFIX", "Stage", "beside", "same_file_content"]

CHUNK = 1024 * 1024
STAGING_PREFIX = ".backapp-restore-"


class Stage:
    """The hidden folder a restore is extracted into, and the move into place."""

    def __init__(self, root: Path, final: Path, *, rename_whole: bool) -> None:
        self.root = root
        self.final = final
        self.rename_whole = rename_whole
        self._dirs: list[tuple[Path, int, float]] = []
        self._files: set[tuple[str, ...]] = set()
        self._refused: set[tuple[str, ...]] = set()
        """Members refused as unsafe: nothing is written below them either."""
        self._real_dirs: set[tuple[str, ...]] = {()}
        self._preserve_owner = hasattr(os, "geteuid") and os.geteuid() == 0
        self.renamed: list[tuple[str, str]] = []
        """(path, the name the restored copy got beside an existing file that differs)."""
        self.replaced: list[str] = []
        """Existing files that differed and were replaced (``overwrite``)."""
        self.unchanged = 0
        """Existing files that already held the backup's content (left as they were)."""

    @classmethod
    def create(cls, options: RestoreOptions, temp_dir: Path | None) -> Stage:
        """A new staging folder for ``options``' target (``temp_dir`` holds it for in-place)."""
        token = secrets.token_hex(4)
        if options.in_place:
            # The original paths may be anywhere: stage in the scratch folder; the move into place
            # falls back to a copy when that is another file system.
            base = temp_dir or Path(tempfile.gettempdir()) / "backapp-agent"
            base.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base))
            return cls(root, Path("/"), rename_whole=False)
        target = Path(os.path.abspath(options.target or "."))
        if os.path.lexists(target):
            if not target.is_dir() or target.is_symlink():
                raise RestoreError(f"{target} exists and is not a folder")
            root = target / f"{STAGING_PREFIX}{token}"
            root.mkdir(mode=0o700)
            return cls(root, target, rename_whole=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        root = target.parent / f"{STAGING_PREFIX}{target.name[:100]}-{token}"
        root.mkdir(mode=0o700)
        return cls(root, target, rename_whole=True)

    # -- extraction ---------------------------------------------------------------------------------

    def _parent(self, parts: tuple[str, ...]) -> Path | str:
        """The staged parent folder of ``parts``, created as needed; a reason if it goes through a
        link or a file."""
        parent = parts[:-1]
        if parent in self._real_dirs:  # checked before; a folder is never replaced later
            return self.root.joinpath(*parent)
        path = self.root
        for depth, name in enumerate(parent, 1):
            path = path / name
            if parent[:depth] in self._real_dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700)
                self._dirs.append((path, 0o755, -1.0))  # implicit: a sane mode, today's mtime
                continue
            if stat.S_ISLNK(st.st_mode):
                return (
                    "its folder is a symbolic link in the archive (refused: it could lead outside)"
                )
            if not stat.S_ISDIR(st.st_mode):
                return "its folder is a file in the archive"
        for depth in range(1, len(parent) + 1):
            self._real_dirs.add(parent[:depth])
        return path

    def refuse(self, parts: tuple[str, ...]) -> None:
        """Write nothing at or below ``parts`` (a member that was refused as unsafe)."""
        self._refused.add(parts)

    def write(
        self,
        member: tarfile.TarInfo,
        content: Callable[[], IO[bytes] | None],
        *,
        in_place: bool,
    ) -> str | None:
        """Write ``member`` (a checked one: see ``check_member``) into the staging folder, a regular
        file's bytes read from ``content()``. Returns why it was not written, or ``None``."""
        parts = member_path(member.name)
        assert parts
        refused = next(
            (parts[:i] for i in range(1, len(parts)) if parts[:i] in self._refused), None
        )
        if refused is not None:
            self._refused.add(parts)
            return f"its folder {'/'.join(refused)!r} was refused"
        problem = self._write(member, parts, content, in_place)
        if problem is not None:
            self._refused.add(parts)
        return problem

    def _write(
        self,
        member: tarfile.TarInfo,
        parts: tuple[str, ...],
        content: Callable[[], IO[bytes] | None],
        in_place: bool,
    ) -> str | None:
        parent = self._parent(parts)
        if isinstance(parent, str):
            return parent
        path = parent / parts[-1]
        mask = 0o7777 if in_place else 0o777
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                if not member.isdir():
                    return "a folder of the same name is already in the archive"
            else:
                os.unlink(path)  # a later member of the same name wins, as with tar
                self._files.discard(parts)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            self._dirs.append((path, member.mode & mask, member.mtime))
        elif member.isreg():
            source = content()
            assert source is not None
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
            with open(fd, "wb", closefd=True) as out:
                while block := source.read(CHUNK):
                    out.write(block)
                out.flush()
                os.chmod(fd, member.mode & mask)
                self._owner(fd, member)
                os.utime(fd, (member.mtime, member.mtime))
            self._files.add(parts)
        elif member.issym():
            os.symlink(member.linkname, path)
            self._owner(path, member)
            if os.utime in os.supports_follow_symlinks:
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        elif member.islnk():
            target = member_path(member.linkname)
            if not target or target not in self._files:
                return f"hard link to a file that was not restored ({member.linkname})"
            os.link(self.root.joinpath(*target), path, follow_symlinks=False)
            self._files.add(parts)
        return None

    def _owner(self, path: Path | int, member: tarfile.TarInfo) -> None:
        if self._preserve_owner:  # as tar does for root
            try:
                if isinstance(path, int):
                    os.fchown(path, member.uid, member.gid)
                else:
                    os.lchown(path, member.uid, member.gid)
            except OSError:
                pass

    def finish_extraction(self, skip: Callable[[str, str], None]) -> int:
        """Folder modes and times (deepest first, after their contents), and the on-disk check
        that no symbolic link leads outside (chains of links that each looked harmless). Returns
        how many links that check removed."""
        removed = 0
        if self.final != Path("/"):
            root = os.path.realpath(self.root)
            for link in list(_walk_links(self.root)):
                resolved = os.path.realpath(link)
                if resolved != root and not resolved.startswith(root + os.sep):
                    rel = os.path.relpath(link, self.root)
                    target = os.readlink(link)
                    os.unlink(link)
                    removed += 1
                    skip(rel, f"symbolic link leads outside the target ({target})")
        for path, mode, mtime in sorted(self._dirs, key=lambda d: -len(d[0].parts)):
            os.chmod(path, mode)
            if mtime >= 0:
                os.utime(path, (mtime, mtime))
        return removed

    # -- the move into place ------------------------------------------------------------------------

    def commit(self, overwrite: bool, skip: Callable[[str, str], None]) -> None:
        """Move the staged restore into place: a rename into a new folder, else a merge in which
        no existing file is lost: identical ones are left alone, different ones are kept with the
        restored copy beside them, unless ``overwrite`` (see ``renamed``, ``replaced``,
        ``unchanged``; what cannot be placed at all goes to ``skip``)."""
        if self.rename_whole:
            try:
                os.rename(self.root, self.final)
            except OSError as exc:
                raise RestoreError(f"could not move the restore into {self.final}: {exc}") from exc
            return
        stamp = datetime.now().strftime("%Y-%m-%d %H-%M-%S")
        self._merge(self.root, self.final, "", overwrite, skip, stamp)
        self.discard()

    def _merge(
        self,
        src: Path,
        dst: Path,
        rel: str,
        overwrite: bool,
        skip: Callable[[str, str], None],
        stamp: str,
    ) -> None:
        in_place = self.final == Path("/")
        for name in sorted(os.listdir(src)):
            s, d, r = src / name, dst / name, f"{rel}{name}"
            sst = os.lstat(s)
            try:
                dst_st: os.stat_result | None = os.lstat(d)
            except FileNotFoundError:
                dst_st = None
            if dst_st is None:
                _move(s, d)
                continue
            if stat.S_ISDIR(sst.st_mode):
                if stat.S_ISDIR(dst_st.st_mode) or (
                    in_place and stat.S_ISLNK(dst_st.st_mode) and d.is_dir()
                ):
                    self._merge(s, d, r + "/", overwrite, skip, stamp)
                else:
                    skip(r, "something that is not a folder is in the way (kept)")
                continue
            if stat.S_ISDIR(dst_st.st_mode):
                skip(r, "a folder is in the way (kept)")
            elif stat.S_ISLNK(sst.st_mode):
                if stat.S_ISLNK(dst_st.st_mode) and os.readlink(s) == os.readlink(d):
                    continue  # the same link
                if overwrite:
                    self._replace(s, d, name)
                    self.replaced.append(r)
                else:
                    skip(r, "kept the existing entry in the link's place (--overwrite replaces it)")
            elif same_file_content(s, sst, d, dst_st):
                self.unchanged += 1
            elif overwrite:
                self._replace(s, d, name)
                self.replaced.append(r)
            else:
                copy = beside(d, stamp)
                _move(s, copy)
                self.renamed.append((r, copy.name))

    @staticmethod
    def _replace(src: Path, dst: Path, name: str) -> None:
        tmp = dst.parent / f".{name[:100]}.backapp-{secrets.token_hex(4)}"
        _move(src, tmp)
        os.replace(tmp, dst)

    def discard(self) -> None:
        """Remove the staging folder and all in it (the target is left as it was)."""
        if os.path.lexists(self.root):
            _make_writable(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def beside(path: Path, stamp: str) -> Path:
    """Where a restored copy goes when ``path`` exists and differs: ``name (restored STAMP).ext``,
    with ``, 2``, ``, 3``... when that is taken too.

    >>> beside(Path("/nonexistent/report.pdf"), "2026-12-01 14-02-00").name
    'report (restored 2026-12-01 14-02-00).pdf'
    """
    stem, dot, ext = path.name.rpartition(".")
    if not dot or not stem:
        stem, ext = path.name, ""
    else:
        ext = "." + ext
    candidate = path.with_name(f"{stem} (restored {stamp}){ext}")
    n = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{stem} (restored {stamp}, {n}){ext}")
        n += 1
    return candidate


def same_file_content(a: Path, a_st: os.stat_result, b: Path, b_st: os.stat_result) -> bool:
    """Whether two regular files hold the same bytes (sizes first, then the bytes)."""
    if not (stat.S_ISREG(a_st.st_mode) and stat.S_ISREG(b_st.st_mode)):
        return False
    if a_st.st_size != b_st.st_size:
        return False
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                block = fa.read(CHUNK)
                if block != fb.read(len(block) or 1):
                    return False
                if not block:
                    return True
    except OSError:
        return False


def _walk_links(root: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                yield path


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                try:
                    os.chmod(path, 0o700)
                except OSError:
                    pass


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(os.fspath(src), os.fspath(dst))
