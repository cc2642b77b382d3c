"""The README's command table lists every command of ``backapp`` and ``backapp-agent`` with every
option its parser takes, and nothing the parsers do not know: a new option that is not documented
(or a documented one that went away) fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from backend.cli import build_parser as server_parser
from desktop_agent.cli import build_parser as agent_parser

README = Path(__file__).resolve().parents[1] / "README.md"
#: Options every command takes, documented once under the table rather than on every row.
COMMON = {"--help", "--verbose"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parser_commands(program: str, parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """``{"backapp-agent run": {"--config", "--json"}, …}``: each leaf command and its long
    options (hidden ones left out: ``configure --api-key`` exists only to refuse a key)."""
    found: dict[str, set[str]] = {}

    def walk(name: str, p: argparse.ArgumentParser) -> None:
        children = _subcommands(p)
        if children:
            for child, sub in children.items():
                walk(f"{name} {child}", sub)
            return
        options = {
            option
            for action in p._actions
            if action.help != argparse.SUPPRESS
            for option in action.option_strings
            if option.startswith("--")
        }
        found[name] = options - COMMON

    walk(program, parser)
    return found


def readme_commands() -> dict[str, set[str]]:
    """The rows of the README's ``## Commands`` table: command and the long options it shows."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(
            r"\| `((?:backapp-agent|backapp)(?: [a-z0-9][a-z0-9-]*)*)([^`]*)` \|", line
        )
        if match is None:
            continue
        name, rest = match.group(1), match.group(2)
        rows.setdefault(name, set()).update(re.findall(r"--[a-z][a-z0-9-]*", rest))
    return rows


@pytest.mark.parametrize(
    ("program", "parser"), [("backapp", server_parser()), ("backapp-agent", agent_parser())]
)
def test_the_readme_lists_every_command_and_option(
    program: str, parser: argparse.ArgumentParser
) -> None:
    documented = {
        name: options
        for name, options in readme_commands().items()
        if name.split(" ")[0] == program and name != program
    }
    assert documented == parser_commands(program, parser)


def test_the_readme_says_every_agent_command_takes_v() -> None:
    section = README.read_text(encoding="utf-8").split("\n## Commands\n", 1)[1]
    assert "Every `backapp-agent` command takes `-v`" in section


def test_no_install_hint_names_a_package_that_is_not_published() -> None:
    """BackApp is installed from a checkout (``pip install -e ".[tray]"``) or from its builds; a
    hint like ``pip install 'backapp[tray]'`` sends people to PyPI, where no such package is ours."""
    root = README.parent
    files = [README, *(root / "docs").glob("*.md")]
    for package in ("backend", "desktop_agent"):
        files += (root / package).rglob("*.py")
    offenders = [
        str(path.relative_to(root))
        for path in files
        if re.search(r"pip install [\"']?backapp\[", path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
