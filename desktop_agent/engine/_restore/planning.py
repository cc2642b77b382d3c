"""What a restore writes, and where: the options, the ``--path`` filter, the rules every member must
pass before anything is written (tar-slip), and the folder a restore goes to when none is given.

Pure functions and small values only: nothing here touches the network or the disk.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import RestoreError
from .._excludes import glob_to_regex

__all__ = [
    "MemberInfo",
    "PathFilter",
    "RestoreOptions",
    "check_member",
    "default_target_name",
    "member_info",
    "member_path",
]


@dataclass(frozen=True, slots=True)
class RestoreOptions:
    target: Path | None = None
    """Where to restore; ``None`` with ``in_place`` (the original paths) or ``list_only``."""
    in_place: bool = False
    """Restore to the members' original absolute paths."""
    overwrite: bool = False
    """Replace existing files even when they are newer than the backup's copy."""
    patterns: tuple[str, ...] = ()
    """Restore only the members these ``PathFilter`` patterns select."""
    list_only: bool = False
    """Read (and verify) the archive and report its members; write nothing."""

    def check(self) -> None:
        """Raise ``RestoreError`` for options that name no place, or two, to restore to."""
        if self.in_place and self.target is not None:
            raise RestoreError("choose either a target folder or an in-place restore, not both")
        if not self.in_place and not self.list_only and self.target is None:
            raise RestoreError("no target folder given")

    @property
    def target_label(self) -> str:
        """The target as the restore events name it: ``/`` in place, empty for a listing."""
        return "" if self.list_only else ("/" if self.in_place else str(self.target))


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One archive member, as ``--list`` shows it."""

    name: str
    kind: str
    """``file``, ``dir``, ``symlink``, ``hardlink`` or ``other``."""
    size: int
    mode: int
    mtime: float
    linkname: str = ""


def member_info(member: tarfile.TarInfo) -> MemberInfo:
    """What a listing shows of ``member``."""
    return MemberInfo(
        name=member.name,
        kind=_kind(member),
        size=member.size,
        mode=member.mode,
        mtime=member.mtime,
        linkname=member.linkname,
    )


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "other"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60]


def default_target_name(config_name: str, filename: str) -> str:
    """The folder a restore goes to when none is given: never an existing one (see ``Restorer``).

    >>> default_target_name("My Daily", "backup-2025-01-07-143022.tar.gz")
    'backapp-restore-My-Daily-2025-01-07-143022'
    """
    stamp = filename.split(".", 1)[0].removeprefix("backup-")
    parts = [p for p in ("backapp-restore", _slug(config_name), _slug(stamp)) if p]
    return "-".join(parts)


def member_path(name: str) -> tuple[str, ...] | None:
    """The path components of a member name, or ``None`` if it is absolute or has ``..``.

    >>> member_path("home/me/./a.txt"), member_path("/etc/passwd"), member_path("a/../../x")
    (('home', 'me', 'a.txt'), None, None)
    """
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


def _link_escapes(parts: tuple[str, ...], target: str) -> bool:
    """Whether a symbolic link at ``parts`` pointing to ``target`` leaves the restore root
    (lexically; the extraction also checks the links on disk once all are written)."""
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
    return resolved == ".." or resolved.startswith("../")


def check_member(member: tarfile.TarInfo, *, in_place: bool = False) -> str | None:
    """Why ``member`` must not be restored, or ``None`` when it is safe.

    ``in_place`` allows symbolic links to any path (the target is the whole file system then).
    """
    parts = member_path(member.name)
    if parts is None:
        return "absolute path or '..' in the name"
    if not parts:
        return "empty name"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    if member.issym():
        if not in_place and _link_escapes(parts, member.linkname):
            return f"symbolic link pointing outside the target ({member.linkname})"
    elif member.islnk():
        target = member_path(member.linkname)
        if target is None or not target:
            return f"hard link pointing outside the target ({member.linkname})"
    elif not (member.isreg() or member.isdir()):
        return "unsupported member type"
    return None


class PathFilter:
    """Which members ``--path PATTERN`` selects.

    A pattern without ``/`` matches a name at any depth (``*.pdf``, ``Documents``); a pattern with
    ``/`` matches from the archive's root (a leading ``/`` is ignored, so the original absolute path
    works: ``/home/me/Documents``); ``*`` and ``?`` never match ``/``, ``**`` matches across folders.
    A folder that matches selects everything below it.

    >>> f = PathFilter(["/home/me/Documents", "*.pdf"])
    >>> [f.matches(n) for n in ("home/me/Documents/a.txt", "x/y/z.pdf", "home/me/b.txt")]
    [True, True, False]
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [p for p in patterns if p.strip("/")]
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for pattern in self.patterns:
            body = pattern.strip("/")
            anchored = "/" in body
            self._rules.append((anchored, re.compile(glob_to_regex(body))))
        self.used = [False] * len(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def matches(self, name: str) -> bool:
        """Whether a pattern selects the member ``name`` (each pattern that does is marked used)."""
        parts = [p for p in name.split("/") if p not in ("", ".")]
        hit = False
        for i, (anchored, rule) in enumerate(self._rules):
            for depth in range(1, len(parts) + 1):
                candidate = "/".join(parts[:depth]) if anchored else parts[depth - 1]
                if rule.fullmatch(candidate):
                    self.used[i] = True
                    hit = True
                    break
        return hit

    def may_select_below(self, folder: str) -> bool:
        """Whether anything below ``folder`` can be selected: ``False`` lets a reader skip the
        folder unread (a snapshot restore of one path reads only the folders on its way). Only
        anchored patterns narrow it down; their literal start (up to the first ``*?[``) is compared.

        >>> f = PathFilter(["/home/me/Documents/a.txt"])
        >>> [f.may_select_below(d) for d in ("home", "home/me/Documents", "home/you", "etc")]
        [True, True, False, False]
        """
        parts = [p for p in folder.split("/") if p not in ("", ".")]
        for pattern, (anchored, _rule) in zip(self.patterns, self._rules, strict=True):
            if not anchored:
                return True
            literal: list[str] = []
            for piece in pattern.strip("/").split("/"):
                if any(c in piece for c in "*?["):
                    break
                literal.append(piece)
            n = min(len(parts), len(literal))
            if parts[:n] == literal[:n]:
                return True
        return not self._rules

    def unused(self) -> list[str]:
        """The patterns that have selected nothing so far."""
        return [p for p, used in zip(self.patterns, self.used, strict=True) if not used]
