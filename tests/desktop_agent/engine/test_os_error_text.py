"""Operating-system errors in a restore's failure, as people read them (no error numbers)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from desktop_agent.engine._errors import os_error_text


def test_a_real_error_reads_as_its_words_and_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        (blocker / "below").mkdir(parents=True)
    text = os_error_text(info.value)
    assert text == f"Not a directory: {blocker / 'below'}"
    assert "Errno" not in text and "'" not in text


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (OSError(errno.EEXIST, "File exists", "/a", None, "/b"), "File exists: /a → /b"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OSError("something odd"), "something odd"),
    ],
)
def test_forms(exc: OSError, text: str) -> None:
    assert os_error_text(exc) == text
