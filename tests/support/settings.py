"""The server's settings as the integration tests use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backend.settings import Settings
from tests.support.paths import ROOT

SECRET = b"test-secret-0123456789abcdef0123456789abcdef"


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=SECRET,
        public_url="http://testserver.local",
        heartbeat_flush_seconds=0.2,
        # Server-side configs are refused unless their sources lie under these roots; the
        # integration tests use made-up paths. Tests of the rule itself override this.
        server_source_roots=("/",),
        # The periodic tasks run once at start-up; tests drive them directly with their own clock.
        task_interval=3600.0,
        # Rounds finish their work in one go whatever the machine's load, so a test's round is
        # deterministic; the tests of the budget set it (and the rows per round) themselves.
        round_budget_seconds=0.0,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def migrate(database_url: str) -> None:
    """Apply the real Piccolo migrations, the way ``backapp migrate`` does."""
    env = {**os.environ, "DATABASE_URL": database_url, "BACKAPP_SECRET_KEY": SECRET.decode()}
    subprocess.run(
        [sys.executable, "-m", "backend.cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
