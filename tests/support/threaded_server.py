"""The real app served by uvicorn on loopback, in a thread of the test process.

For end-to-end tests that must reach into the server while real clients talk to it over HTTP
(e.g. move its clock): a ``backapp serve`` process would be out of reach.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from backend.app import create_app
from backend.services import Services
from backend.settings import Settings


@contextmanager
def serve_in_thread(settings: Settings, services: Services) -> Iterator[str]:
    """Serve ``create_app(settings, services)`` until the block ends; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(settings, services)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
