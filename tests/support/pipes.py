"""Run a command whose standard output is a pipe nobody reads any more (``cmd | head`` after
``head`` has quit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_into_closed_pipe(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` with stdout a pipe whose reader is already gone, and the
    environment without ``BACKAPP_*``/``AWS_*`` plus ``env``."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the child writes anything: every write fails with EPIPE
    try:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKAPP_", "AWS_"))}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=full_env,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
