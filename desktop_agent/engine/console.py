"""What both command lines (``backapp`` on the server, ``backapp-agent``) do at their end with
standard output, so that ``… | head`` behaves the same in both: one module for both sides, as
with ``schedule`` and ``bandwidth``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["EXIT_BROKEN_PIPE", "run_to_exit_status"]

#: What a program killed by SIGPIPE reports (128 + 13): the reader of its output went away.
EXIT_BROKEN_PIPE = 141

_Argv = TypeVar("_Argv")


def run_to_exit_status(main: Callable[[_Argv], int], argv: _Argv) -> int:
    """``main(argv)``, its output flushed; ``EXIT_BROKEN_PIPE`` when the reader of standard output
    closed it first (``backapp-agent backups | head``): not worth a traceback.

    The flush is here, not at exit, so that a reader that went away is handled here too. Python
    flushes stdout again at exit, which would fail the same way, so it is pointed at the null
    device first."""
    try:
        status = main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return EXIT_BROKEN_PIPE
