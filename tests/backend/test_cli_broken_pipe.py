"""``backapp s3 lifecycle | head``: a reader that closes the pipe early ends the command quietly
(exit status 141, as a program killed by SIGPIPE reports), with no traceback."""

from __future__ import annotations

from tests.support.pipes import run_into_closed_pipe


def test_s3_lifecycle_into_a_closed_pipe_exits_quietly() -> None:
    done = run_into_closed_pipe("backend.cli", "s3", "lifecycle", "--glacier-days", "0")
    assert done.returncode == 141
    assert done.stderr == ""  # no traceback, no "Exception ignored" at exit
