"""Fixtures of the CLI's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

#: The loggers ``backapp-agent`` sets a level on (``setup_logging``, ``daemon``).
_CLI_LOGGERS = ("httpx", "httpcore", "desktop_agent", "backapp-agent")


@pytest.fixture(autouse=True)
def _logging_as_before() -> Iterator[None]:
    """``main`` configures the process's logging the way a program does (root handler, the HTTP
    libraries at WARNING); undo it after each test, or tests that run later in the same process
    (the engine's log redaction) see no records."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in _CLI_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
