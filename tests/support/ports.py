"""Free loopback ports for the servers the tests start, that no other test worker hands out.

The suite runs on several pytest-xdist workers (``tests/support/parallel.py``). The usual trick, bind
to port 0 and close, returns a port from the kernel's ephemeral range that stays free only by luck
until the server binds it: another worker's probe, or any outgoing connection, may take it meanwhile,
and a health check may then reach another test's server. So each worker takes its ports from a block
of its own below the ephemeral range (32768 and up on Linux), in turn, skipping any port that is in
use; a single process (no xdist) uses the first block.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading

__all__ = ["free_port", "free_ports", "worker_index"]

_FIRST = 20_000
_BLOCK = 600  # ports per worker: blocks for up to 20 workers end below 32768
_lock = threading.Lock()


def worker_index() -> int:
    """0 for ``gw0`` (or no xdist), 1 for ``gw1``..."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def _block_start() -> int:
    return _FIRST + (worker_index() % 20) * _BLOCK


# A random starting point: two test sessions on one machine (say, two checkouts) rarely take the
# same port at the same time, and a port a server of this worker just left is reached last.
_next = itertools.count(random.randrange(_BLOCK))


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind theirs: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing listens on, from this worker's block."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports nothing listens on, from this worker's block."""
    start = _block_start()
    found: list[int] = []
    with _lock:
        for _ in range(_BLOCK):
            port = start + next(_next) % _BLOCK
            if port not in found and _bindable(port):
                found.append(port)
                if len(found) == count:
                    return found
    raise RuntimeError(f"no {count} free ports in {start}..{start + _BLOCK - 1}")
