"""The server's container image (the repository's ``Dockerfile``): it builds, starts with its
defaults, migrates its SQLite database and answers ``/api/health``. Needs a running Docker daemon;
skipped without one (the CI machine has none)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import httpx
import pytest

from tests.support.packaging import package_version
from tests.support.paths import ROOT
from tests.support.server_process import free_port

pytestmark = pytest.mark.e2e


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def test_the_server_image_builds_starts_and_answers() -> None:
    if not _docker_works():
        pytest.skip("no running Docker daemon")
    tag = f"backapp-server-test:{uuid.uuid4().hex[:8]}"
    name = tag.replace(":", "-")
    port = free_port()
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    try:
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", tag],
            check=True,
            timeout=120,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, subprocess.run(
                ["docker", "logs", name], capture_output=True, text=True
            ).stdout
            time.sleep(0.5)
        assert r.json()["version"] == package_version()
        user = subprocess.run(
            ["docker", "exec", name, "id", "-u"], capture_output=True, text=True, check=True
        )
        assert user.stdout.strip() != "0"  # not root
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
