"""The ``backapp-agent`` argument parser: the global options, then the commands of each group.

A command group is a module with a ``register(commands)`` function that adds its sub-commands and
sets ``func`` on each (the function ``main`` calls with the parsed arguments). Adding a command is
one new module plus its line in ``COMMAND_GROUPS``, whose order is the order ``--help`` lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from desktop_agent import __version__

from . import (
    checks,
    compact,
    configure,
    pair,
    recovery,
    restore,
    run,
    snapshots,
    status,
    update,
)
from .common import Commands

COMMAND_GROUPS: tuple[Callable[[Commands], None], ...] = (
    configure.register,  # configure
    pair.register,  # pair
    run.register,  # run, daemon
    status.register,  # status
    restore.register,  # backups, restore
    snapshots.register,  # snapshots, ls
    checks.register,  # check, drill
    compact.register,  # compact
    recovery.register,  # recovery init, rotate, status
    update.register,  # update
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``backapp-agent``'s command line."""
    parser = argparse.ArgumentParser(
        prog="backapp-agent",
        description="BackApp agent: backs up this machine's folders straight to S3.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"backapp-agent {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for register in COMMAND_GROUPS:
        register(commands)
    return parser
