"""The engine's storage seams onto the embedded local storage, without an HTTP round trip.

Uploads (:class:`LocalDirectStorage`): going through the server's own HTTP port instead would need
``BACKAPP_PUBLIC_URL`` to be reachable from the server itself (often false behind a proxy) and a
listening socket (absent in ASGI tests); the in-process path keeps every check a URL carries
(signature, expiry, size, SHA-256, no overwrite). Downloads (:class:`LocalStorageTransport`) let
``backapp restore`` run without a running server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio.from_thread
import anyio.lowlevel
import httpx

from backend.storage import AccessDenied, LocalStorage, ObjectStoreError
from backend.storage.local_routes import RangeNotSatisfiable, byte_span, upload_refusal_status
from backend.storage.local_signing import ROUTE_PREFIX
from desktop_agent.engine import StorageError
from desktop_agent.engine.protocol import Body

__all__ = ["LocalDirectStorage", "LocalStorageTransport"]


class LocalDirectStorage:
    """The engine's ``Storage`` for the embedded local storage, without an HTTP round trip: the
    signed URL is verified exactly as the ``/storage/o`` route does, then the body is stored."""

    def __init__(self, storage: LocalStorage) -> None:
        """Create it on the event loop: part uploads call back from other threads."""
        self.storage = storage
        self.token = anyio.lowlevel.current_token()

    def put(self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]) -> str | None:
        parts = urlsplit(url)
        if not parts.path.startswith(ROUTE_PREFIX + "/"):
            raise StorageError("not a local-storage URL", status=400)
        key = unquote(parts.path[len(ROUTE_PREFIX) + 1 :])
        pieces = [memoryview(body)] if isinstance(body, Body) else [memoryview(b) for b in body]
        try:
            grant = self.storage.verify("PUT", key, parse_qsl(parts.query, keep_blank_values=True))
        except AccessDenied as exc:
            raise StorageError(f"storage refused the upload: {exc}", status=403) from exc

        async def chunks() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield bytes(piece)

        try:
            etag: str = anyio.from_thread.run(
                self.storage.receive, grant, chunks(), token=self.token
            )
        except (ObjectStoreError, OSError) as exc:
            status = upload_refusal_status(exc)
            if status == 503:
                raise StorageError(f"storage failed: {exc}", status=503, transient=True) from exc
            raise StorageError(f"storage refused the upload: {exc}", status=status) from exc
        return etag


class _FileStream(httpx.SyncByteStream):
    def __init__(self, path: Path, start: int, length: int) -> None:
        self.path, self.start, self.length = path, start, length

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as file:
            file.seek(self.start)
            left = self.length
            while left > 0:
                data = file.read(min(1024 * 1024, left))
                if not data:
                    break
                left -= len(data)
                yield data


class LocalStorageTransport(httpx.BaseTransport):
    """Serves the local storage's signed GET URLs in-process (same checks as ``/storage/o``), so
    ``backapp restore`` works without a running server."""

    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method != "GET" or not path.startswith(ROUTE_PREFIX + "/"):
            return httpx.Response(400, request=request)
        key = unquote(path[len(ROUTE_PREFIX) + 1 :])
        query = parse_qsl(request.url.query.decode("latin-1"), keep_blank_values=True)
        try:
            grant = self.storage.verify("GET", key, query)
        except AccessDenied:
            return httpx.Response(403, request=request)
        file = self.storage.object_path(grant.key)
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            return httpx.Response(404, request=request)
        try:
            span = byte_span(request.headers.get("range"), size)
        except RangeNotSatisfiable:
            return httpx.Response(416, request=request)
        return httpx.Response(
            span.status,
            headers=span.headers,
            stream=_FileStream(file, span.first, span.length),
            request=request,
        )
