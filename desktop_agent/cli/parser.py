"""The ``backapp-agent`` argument parser: the global options, then the commands of each group.

A command group is a function of ``arguments`` that adds its sub-commands, each naming the function
that runs it (``"module:function"``, imported only when that command runs: ``--help`` and every
command load no more than they need). ``COMMAND_GROUPS``' order is the order ``--help`` lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from . import arguments
from .arguments import Commands

COMMAND_GROUPS: tuple[Callable[[Commands], None], ...] = (
    arguments.add_configure,  # configure
    arguments.add_pair,  # pair
    arguments.add_run,  # run, daemon
    arguments.add_status,  # status
    arguments.add_restore,  # backups, restore
    arguments.add_snapshots,  # snapshots, ls
    arguments.add_checks,  # check, drill
    arguments.add_compact,  # compact
    arguments.add_recovery,  # recovery init, rotate, status
    arguments.add_update,  # update
)


class _Version(argparse._VersionAction):
    """``--version``, reading the version (package metadata, not free) only when asked."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from desktop_agent import __version__

        self.version = f"backapp-agent {__version__}"
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``backapp-agent``'s command line."""
    parser = argparse.ArgumentParser(
        prog="backapp-agent",
        description="BackApp agent: backs up this machine's folders straight to S3.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for register in COMMAND_GROUPS:
        register(commands)
    return parser
