"""What a short agent command pays before it does anything: the modules its start imports.

Every ``backapp-agent`` command starts a new process, so its imports are part of the time a user waits
for ``restore`` of one file or a second snapshot (bench/snapshot_bench.py measures it beside restic).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT

#: Modules httpx's optional command line pulls in when they are installed (as beside the server).
HTTPX_CLI = ("click", "pygments", "rich")


def _imported_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_the_agent_does_not_import_httpx_command_line() -> None:
    # a command that talks to the server (building the parser alone no longer imports httpx)
    imported = _imported_after("import desktop_agent.cli, desktop_agent.cli.restore")
    assert "httpx" in imported  # the check below means something only if httpx was imported
    assert not {m for m in imported if m.split(".")[0] in HTTPX_CLI}


def test_httpx_without_the_agent_would_import_it() -> None:
    """The check above can fail: on this machine httpx alone does import its command line."""
    imported = _imported_after("import httpx")
    assert {m for m in imported if m.split(".")[0] in HTTPX_CLI}
