"""Exclude rules: gitignore-like glob patterns.

Syntax (the same for a config's ``excludes`` list and for ``.backappignore`` files, one pattern per
line there, ``#`` starting a comment line):

- ``*`` matches anything but ``/``; ``?`` one character but ``/``; ``[abc]``, ``[a-z]``, ``[!a]``
  character classes; ``\\`` escapes the next character.
- A pattern without a ``/`` matches a file or folder of that name at any depth (``*.tmp``,
  ``node_modules``).
- A pattern with a ``/`` in the middle or at the start is anchored: it matches paths relative to the
  folder the rule belongs to (the source folder for a config's excludes, the folder holding the
  ``.backappignore`` file otherwise). A leading ``/`` only anchors.
- ``**/`` matches any number of folders (``**/build``), ``/**`` everything inside (``logs/**``).
- A trailing ``/`` matches folders only (``cache/``).
- ``!pattern`` re-includes what an earlier rule excluded. As in git, a file inside an excluded folder
  cannot be re-included: the folder is never entered.
- The last matching rule wins. Rules are read in this order: the defaults, the config's excludes,
  then ``.backappignore`` files from the source folder down to the file's own folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_EXCLUDES",
    "IGNORE_FILE",
    "NODE_MODULES_EXCLUDE",
    "Rule",
    "RuleSet",
    "glob_to_regex",
    "parse_rule",
    "parse_rules",
]

IGNORE_FILE = ".backappignore"
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"

#: Excluded unless a config turns the defaults off: trash folders and caches. Folders tagged with a
#: ``CACHEDIR.TAG`` (https://bford.info/cachedir/) are skipped as well.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".Trash/",
    ".Trashes/",
    ".Trash-*/",
    "**/.local/share/Trash/",
    "$RECYCLE.BIN/",
    ".cache/",
    "**/Library/Caches/",
    "__pycache__/",
)
NODE_MODULES_EXCLUDE = "node_modules/"


def glob_to_regex(glob: str) -> str:
    """The regular expression (for ``fullmatch``) of a gitignore-style glob, without the ``!``,
    leading-``/`` and trailing-``/`` markers (``parse_rule`` strips those).

    >>> glob_to_regex("*.tmp")
    '[^/]*\\\\.tmp'
    """
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                j = i + 2
                segment_start = i == 0 or glob[i - 1] == "/"
                if segment_start and j < n and glob[j] == "/":
                    out.append("(?:.*/)?")
                    i = j + 1
                    continue
                if segment_start and j == n:
                    out.append(".*")
                    i = j
                    continue
                out.append("[^/]*")
                i = j
                continue
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and glob[j] in "!^":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : j]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            if not negate and body.startswith("^"):
                body = "\\" + body
            out.append(f"(?!/)[{'^' if negate else ''}{body}]")
            i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed pattern."""

    pattern: str
    regex: re.Pattern[str]
    negate: bool = False
    dir_only: bool = False
    anchored: bool = False
    """Matched against the path relative to the rule's folder, not just the name."""

    def matches(self, relpath: str, name: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(relpath if self.anchored else name) is not None


def _strip_trailing_spaces(line: str) -> str:
    # Trailing spaces are ignored unless escaped with a backslash (as in gitignore).
    stripped = line.rstrip(" \t")
    if stripped != line and stripped.endswith("\\"):
        stripped += line[len(stripped)]
    return stripped


def parse_rule(pattern: str) -> Rule | None:
    """A ``Rule`` from one pattern, or ``None`` for a blank line or a ``#`` comment."""
    text = _strip_trailing_spaces(pattern.rstrip("\r\n"))
    if not text or text.startswith("#"):
        return None
    negate = text.startswith("!")
    if negate:
        text = text[1:]
    elif text.startswith(("\\!", "\\#")):
        text = text[1:]
    dir_only = text.endswith("/") and not text.endswith("\\/")
    text = text.rstrip("/") if dir_only else text
    if not text:
        return None
    anchored = "/" in text
    text = text.removeprefix("/")
    regex = re.compile(f"(?s:{glob_to_regex(text)})")
    return Rule(pattern, regex, negate=negate, dir_only=dir_only, anchored=anchored)


def parse_rules(lines: Iterable[str]) -> list[Rule]:
    """Rules from patterns or from the lines of a ``.backappignore`` file."""
    return [rule for line in lines if (rule := parse_rule(line)) is not None]


_PLAIN = re.compile("").flags


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules stacked from the source folder down: ``levels`` holds (folder relative to the source,
    rules of that folder) from the shallowest to the deepest."""

    levels: tuple[tuple[str, tuple[Rule, ...]], ...] = ()
    _any: tuple[re.Pattern[str] | None, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """The source folder's rules alone and no ``!`` among them (the usual case): a path is
    excluded when any rule matches, so one regex per way of matching (name, folder's name, path,
    folder's path) stands for all of them, and a scan of many files asks those four instead of
    every rule in turn."""

    def __post_init__(self) -> None:
        if len(self.levels) != 1 or self.levels[0][0]:
            return
        rules = self.levels[0][1]
        if any(rule.negate or rule.regex.flags != _PLAIN for rule in rules):
            return

        def joined(anchored: bool, dir_only: bool) -> re.Pattern[str] | None:
            patterns = [
                f"(?:{r.regex.pattern})"
                for r in rules
                if r.anchored == anchored and r.dir_only == dir_only
            ]
            return re.compile("|".join(patterns)) if patterns else None

        object.__setattr__(
            self,
            "_any",
            (joined(False, False), joined(False, True), joined(True, False), joined(True, True)),
        )

    def with_level(self, base: str, rules: Sequence[Rule]) -> RuleSet:
        if not rules:
            return self
        return RuleSet((*self.levels, (base, tuple(rules))))

    def is_excluded(self, relpath: str, is_dir: bool) -> bool:
        """Whether ``relpath`` (relative to the source folder, ``/``-separated) is excluded."""
        name = relpath.rpartition("/")[2]
        if self._any is not None:
            names, dir_names, paths, dir_paths = self._any
            return bool(
                (names is not None and names.fullmatch(name))
                or (paths is not None and paths.fullmatch(relpath))
                or (is_dir and dir_names is not None and dir_names.fullmatch(name))
                or (is_dir and dir_paths is not None and dir_paths.fullmatch(relpath))
            )
        excluded = False
        for base, rules in self.levels:
            if base and not relpath.startswith(base + "/"):
                continue
            sub = relpath[len(base) + 1 :] if base else relpath
            for rule in rules:
                if rule.matches(sub, name, is_dir):
                    excluded = not rule.negate
        return excluded


def root_rules(
    excludes: Sequence[str],
    *,
    source_root: str,
    default_excludes: bool = True,
    exclude_node_modules: bool = False,
) -> RuleSet:
    """The rules that apply from a source folder down: defaults, then the config's ``excludes``.

    An absolute pattern inside ``source_root`` (``/home/me/photos/raw``) is made relative to it; an
    absolute pattern elsewhere is anchored to the source folder like any pattern with a leading ``/``.
    """
    patterns: list[str] = list(DEFAULT_EXCLUDES) if default_excludes else []
    if exclude_node_modules:
        patterns.append(NODE_MODULES_EXCLUDE)
    root = source_root.rstrip("/")
    for pattern in excludes:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if body.startswith(root + "/"):
            body = "/" + body[len(root) + 1 :]
        patterns.append(("!" if negate else "") + body)
    return RuleSet().with_level("", parse_rules(patterns))
