"""``backapp-agent status | head``: a reader that closes the pipe early ends the command quietly
(exit status 141, as a program killed by SIGPIPE reports), with no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.support.pipes import run_into_closed_pipe


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    done = run_into_closed_pipe(
        "desktop_agent.cli", "status", env={"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)}
    )
    assert done.returncode == 141
    assert done.stderr == ""  # no traceback, no "Exception ignored" at exit
