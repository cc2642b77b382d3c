"""A throwaway Redis server on loopback, for tests of several server processes sharing live events.

    def test_x(redis_url):          # "redis://127.0.0.1:<port>/0"
        ...

The binary is ``$BACKAPP_TEST_REDIS_SERVER`` (CI sets it), else ``redis-server`` on ``PATH``. When
neither exists the tests that use the fixture are skipped, unless ``BACKAPP_TEST_REQUIRE_POSTGRES=1``
is set (CI: the multi-process tests need both), in which case they fail with install instructions.
The server keeps nothing on disk and is stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from .ports import free_port

__all__ = ["redis_url", "start_redis"]

BINARY_ENV = "BACKAPP_TEST_REDIS_SERVER"
REQUIRE_ENV = "BACKAPP_TEST_REQUIRE_POSTGRES"
_HINT = "Install redis-server (Debian/Ubuntu: `apt-get install redis-server`) or set " + BINARY_ENV


def _binary() -> str | None:
    configured = os.environ.get(BINARY_ENV, "").strip()
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("redis-server")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str, workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--protected-mode", "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        if _answers(port):
            return process, port
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not answer within 15 s")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = _binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(f"redis-server is required ({REQUIRE_ENV}=1) but missing. {_HINT}")
        pytest.skip(f"redis-server not found. {_HINT}")
    with tempfile.TemporaryDirectory(prefix="backapp-redis-") as workdir:
        process, port = start_redis(binary, workdir)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
