"""Each ``backapp-agent`` command names its function (``"module:function"``), imported only when it
runs (``arguments.Command``): every name must resolve. What each command loads is checked in
``tests/desktop_agent/engine/test_cli_loads.py``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from desktop_agent import cli
from desktop_agent.cli.arguments import Command


def commands(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, object]]:
    """Every command and sub-command of ``parser`` with the ``func`` it runs."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path}{name}", sub.get_default("func")
                yield from commands(sub, f"{path}{name} ")


def test_every_command_names_a_function_that_exists() -> None:
    found = dict(commands(cli.build_parser()))
    assert {"restore", "ls", "recovery", "recovery init", "update"} <= set(found)
    for name, func in found.items():
        assert isinstance(func, Command), name
        assert callable(func.load()), name
        module, _, function = func.target.partition(":")
        assert module.startswith("desktop_agent.cli.") and function.startswith("cmd_"), name
