"""Operating-system errors in a restore's failure, as people read them (no error numbers)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from desktop_agent.engine._errors import os_error_text, unreadable_text


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


@pytest.mark.parametrize(
    ("exc", "words", "text"),
    [
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", "/a"),
            {},
            "vanished before it could be read",
        ),
        (
            FileNotFoundError(errno.ENOENT, "gone"),
            {"vanished": "vanished during the scan"},
            "vanished during the scan",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/a"),
            {},
            "cannot read: Permission denied",
        ),
        (
            OSError(errno.EIO, "Input/output error"),
            {"doing": "cannot read the link"},
            "cannot read the link: Input/output error",
        ),
        (OSError("odd"), {}, "cannot read: odd"),
    ],
)
def test_a_file_that_could_not_be_read(exc: OSError, words: dict[str, str], text: str) -> None:
    """How the scan, the archive and the snapshot say that a file could not be read."""
    assert unreadable_text(exc, **words) == text
