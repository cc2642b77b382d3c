"""Fixtures of the pairing tests, which run ``backapp-agent`` in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.logs import logging_left_as_found


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """``cli.main`` sets up logging on the test's captured stderr: undone after each test."""
    with logging_left_as_found():
        yield
