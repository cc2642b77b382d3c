"""Storage that misbehaves, on loopback: a fault-injecting TCP proxy, and a minimal PUT server.

``FaultProxy`` sits between a client and any TCP service (moto's S3, or ``PutServer``) and is
switched at run time:

* ``pass``: bytes flow both ways (at most ``rate`` bytes a second towards the service, if set: a
  slow uplink);
* ``blackhole``: every connection, open or new, swallows what the client sends and never answers
  (storage that accepts data and never replies);
* ``refuse``: new connections are closed at once and open ones are cut (storage down).

``PutServer`` answers ``PUT`` with ``200`` and an ``ETag`` (the body's MD5), keeping each body by
path and query, which is all the uploader needs from storage.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

__all__ = ["FaultProxy", "Mode", "PutServer"]

Mode = Literal["pass", "blackhole", "refuse"]


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose behaviour the test switches (see the module docstring)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.rate: float | None = None
        """Bytes per second towards the service in ``pass`` mode (``None``: no limit)."""
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse":
            self._cut_all()

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.update(socks)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.mode == "refuse":
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._track(client, upstream)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket, uplink: bool) -> None:
        try:
            while True:
                data = src.recv(64 * 1024 if self.rate is None or not uplink else 16 * 1024)
                if not data:
                    break
                if self.mode == "blackhole":
                    # Swallow the client's bytes, answer nothing: keep reading so that the client
                    # sends all it has and then waits for an answer that never comes.
                    if uplink:
                        continue
                    break
                if self.mode == "refuse":
                    break
                if uplink and self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if self.mode != "blackhole":
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._cut_all()


class _PutHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PutHTTPServer

    def do_PUT(self) -> None:  # noqa: N802 - the http.server convention
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.bodies[self.path] = body
        etag = f'"{hashlib.md5(body).hexdigest()}"'  # noqa: S324 - S3's ETag, not security
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        return


class _PutHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PutHandler)
        self.bodies: dict[str, bytes] = {}


class PutServer:
    """A minimal storage on 127.0.0.1: ``PUT`` stores the body and answers its ETag."""

    def __init__(self) -> None:
        self._server = _PutHTTPServer()
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def bodies(self) -> dict[str, bytes]:
        return self._server.bodies

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
