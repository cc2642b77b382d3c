"""Exclude rules: the glob translation exactly, the rule semantics, and the scanner applying them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desktop_agent.engine import RuleSet, glob_to_regex, parse_rule, root_rules, scan
from desktop_agent.engine._excludes import CACHEDIR_SIGNATURE, parse_rules


@pytest.mark.parametrize(
    ("glob", "regex"),
    [
        ("*.tmp", r"[^/]*\.tmp"),
        ("a?c", "a[^/]c"),
        ("**/build", "(?:.*/)?build"),
        ("logs/**", "logs/.*"),
        ("a/**/b", "a/(?:.*/)?b"),
        ("[!a-c]x", "(?!/)[^a-c]x"),
        (r"\*literal", r"\*literal"),
        ("[unclosed", r"\[unclosed"),
    ],
)
def test_glob_to_regex(glob: str, regex: str) -> None:
    assert glob_to_regex(glob) == regex


def test_parse_rule_flags() -> None:
    assert parse_rule("# comment") is None
    assert parse_rule("   ") is None
    rule = parse_rule("!/build/")
    assert rule is not None and (rule.negate, rule.dir_only, rule.anchored) == (True, True, True)
    rule = parse_rule("node_modules/")
    assert rule is not None and (rule.negate, rule.dir_only, rule.anchored) == (False, True, False)
    rule = parse_rule(r"\#not-a-comment")
    assert rule is not None and rule.matches("#not-a-comment", "#not-a-comment", False)
    rule = parse_rule("trailing\\ ")
    assert rule is not None and rule.matches("trailing ", "trailing ", False)


CASES = [
    # (patterns, path relative to the source, is_dir, excluded?)
    (["*.tmp"], "a/b/c.tmp", False, True),
    (["*.tmp"], "a/b/c.tmpx", False, False),
    (["build/"], "x/build", True, True),
    (["build/"], "x/build", False, False),  # folders only
    (["/build"], "build", True, True),
    (["/build"], "x/build", True, False),  # anchored at the source
    (["docs/*.pdf"], "docs/a.pdf", False, True),
    (["docs/*.pdf"], "docs/sub/a.pdf", False, False),  # * never crosses /
    (["docs/**/*.pdf"], "docs/sub/deep/a.pdf", False, True),
    (["**/cache"], "a/b/cache", True, True),
    (["*.log", "!keep.log"], "x/keep.log", False, False),  # the last match wins
    (["!keep.log", "*.log"], "x/keep.log", False, True),
    (["name with space.txt"], "d/name with space.txt", False, True),
    (["\u65e5\u672c*"], "\u65e5\u672c\u8a9e.txt", False, True),
]


@pytest.mark.parametrize(("patterns", "relpath", "is_dir", "excluded"), CASES)
def test_rules(patterns: list[str], relpath: str, is_dir: bool, excluded: bool) -> None:
    rules = RuleSet().with_level("", parse_rules(patterns))
    assert rules.is_excluded(relpath, is_dir) is excluded


def test_deeper_level_is_relative_to_its_folder() -> None:
    rules = (
        RuleSet()
        .with_level("", parse_rules(["*.tmp"]))
        .with_level("proj", parse_rules(["/out", "!*.tmp"]))
    )
    assert rules.is_excluded("proj/out", True)
    assert not rules.is_excluded("other/out", True)
    assert not rules.is_excluded("proj/x.tmp", False)  # re-included below proj
    assert rules.is_excluded("other/x.tmp", False)


def test_default_rules_and_absolute_config_patterns() -> None:
    rules = root_rules(["/home/me/photos/raw", "*.iso"], source_root="/home/me")
    assert rules.is_excluded("photos/raw", True)
    assert not rules.is_excluded("photos/raw2", True)
    assert rules.is_excluded(".cache", True)
    assert rules.is_excluded(".Trash", True)
    assert rules.is_excluded("Library/Caches", True)
    assert rules.is_excluded("x/__pycache__", True)
    assert not rules.is_excluded("proj/node_modules", True)
    assert root_rules([], source_root="/", exclude_node_modules=True).is_excluded(
        "p/node_modules", True
    )
    assert not root_rules([], source_root="/", default_excludes=False).is_excluded(".cache", True)


def _scan_names(root: Path, **kw: object) -> tuple[set[str], object]:
    with scan([str(root)], **kw) as result:  # type: ignore[arg-type]
        names = {os.path.relpath(e.path, root) for e in result.entries()}
        return names, result.totals


def test_scan_applies_every_kind_of_exclude(tmp_path: Path) -> None:
    root = tmp_path / "home"
    files = [
        "keep.txt",
        "drop.tmp",
        ".cache/pip/x",
        ".Trash/old.txt",
        "proj/src/main.py",
        "proj/node_modules/lib/index.js",
        "proj/build/out.o",
        "proj/build.txt",
        "proj/.backappignore",
        "proj/secret.key",
        "proj/sub/keep.key",
        "proj/sub/.backappignore",
        "tagged/CACHEDIR.TAG",
        "tagged/blob",
        "untagged/CACHEDIR.TAG",
    ]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"x")
    (root / "proj/.backappignore").write_text("# build output\nbuild/\n*.key\n")
    (root / "proj/sub/.backappignore").write_text("!keep.key\n")
    (root / "tagged/CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# a cache\n")
    (root / "untagged/CACHEDIR.TAG").write_bytes(b"not the signature")

    names, totals = _scan_names(root, excludes=["*.tmp"])
    assert names == {
        ".",
        "keep.txt",
        "proj",
        "proj/src",
        "proj/src/main.py",
        "proj/node_modules",
        "proj/node_modules/lib",
        "proj/node_modules/lib/index.js",
        "proj/build.txt",
        "proj/.backappignore",
        "proj/sub",
        "proj/sub/keep.key",
        "proj/sub/.backappignore",
        "untagged",
        "untagged/CACHEDIR.TAG",
    }
    names, _ = _scan_names(root, exclude_node_modules=True)
    assert "proj/node_modules" not in names and "drop.tmp" in names


def test_scan_totals_and_order(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"12345")
    (root / "b" / "c.txt").write_bytes(b"1" * 600)
    os.symlink("a.txt", root / "link")
    with scan([str(root)]) as result:
        entries = [(e.kind, os.path.relpath(e.path, root), e.size) for e in result.entries()]
        totals = result.totals
    assert entries == [
        ("d", ".", 0),
        ("f", "a.txt", 5),
        ("l", "link", 0),
        ("d", "b", 0),
        ("f", "b/c.txt", 600),
    ]
    assert (totals.files, totals.dirs, totals.symlinks, totals.bytes) == (2, 2, 1, 605)
    # headers + content padded to 512 + the end of the archive
    assert totals.estimated_archive_size == 5 * 512 + 512 + 1024 + 1024


def test_scan_spills_to_disk_and_reads_back(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    names = [f"{i:05d}-{'n' * 200}" for i in range(30_000)]  # > 4 MiB of records
    for n in names[:10]:
        (root / n).write_bytes(b"")
    with scan([str(root)], temp_dir=tmp_path / "t") as result:
        got = [Path(e.path).name for e in result.entries()]
    assert got == ["many", *names[:10]]
