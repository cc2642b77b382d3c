"""The scan asks a source folder's rules (without ``!``) as a few combined regexes: it must say
exactly what asking the rules one by one says."""

from __future__ import annotations

import itertools

from desktop_agent.engine._excludes import (
    DEFAULT_EXCLUDES,
    NODE_MODULES_EXCLUDE,
    RuleSet,
    parse_rules,
)

PATTERNS = [
    *DEFAULT_EXCLUDES,
    NODE_MODULES_EXCLUDE,
    "*.log",
    "build/",
    "/dist",
    "/docs/*.pdf",
    "**/cache/**",
    "a?c",
    "[0-9]*.bak",
    "/top/only/",
    "deep/**/x",
]
PATHS = [
    "a.log",
    "src/a.log",
    "build",
    "src/build",
    "dist",
    "src/dist",
    "docs/x.pdf",
    "docs/sub/x.pdf",
    "x/cache/y",
    "abc",
    "src/abc",
    "1.bak",
    "top/only",
    "top/only/z",
    "deep/a/b/x",
    "node_modules",
    "src/node_modules",
    "keep.txt",
    "naïve café.txt",
]


def _one_by_one(rules: RuleSet, relpath: str, is_dir: bool) -> bool:
    name = relpath.rpartition("/")[2]
    excluded = False
    for _, level in rules.levels:
        for rule in level:
            if rule.matches(relpath, name, is_dir):
                excluded = not rule.negate
    return excluded


def test_combined_rules_agree_with_each_rule() -> None:
    for size in (1, 2, len(PATTERNS)):
        for patterns in itertools.islice(itertools.combinations(PATTERNS, size), 60):
            rules = RuleSet().with_level("", parse_rules(patterns))
            assert rules._any is not None  # the combined form is the one under test
            for relpath, is_dir in itertools.product(PATHS, (False, True)):
                expected = _one_by_one(rules, relpath, is_dir)
                assert rules.is_excluded(relpath, is_dir) is expected, (patterns, relpath, is_dir)


def test_negated_rules_are_asked_in_order() -> None:
    rules = RuleSet().with_level("", parse_rules(["*.log", "!keep.log"]))
    assert rules._any is None
    assert rules.is_excluded("a.log", False)
    assert not rules.is_excluded("keep.log", False)
