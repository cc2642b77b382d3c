"""HTTP side of the local backend: the URLs :class:`~backend.storage.local.LocalStorage` signs.

``PUT /storage/o/{key}`` receives an object or a part, ``GET`` (and ``HEAD``) serve one, with a single
``Range`` for resumable restores. The routes authenticate only by the URL's signature (no session, no
API key, no CSRF token) and find the storage at ``request.app.state.storage``. Errors use the API's
JSON shape: ``{"success": false, "status": 403, "error": "forbidden", "detail": "…"}``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio
from litestar import Request, Response, get, head, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Stream

from .base import (
    AccessDenied,
    BadDigest,
    NoSuchUpload,
    ObjectExists,
    ObjectInfo,
    ObjectStoreError,
    content_disposition,
)
from .local import LocalStorage
from .local_signing import ROUTE_PREFIX, Grant

__all__ = [
    "ByteSpan",
    "RangeNotSatisfiable",
    "byte_span",
    "local_storage_handlers",
    "parse_range",
    "upload_refusal_status",
]

_ROUTE = ROUTE_PREFIX + "/{key:path}"
_OPT = {"exclude_from_csrf": True, "agent_auth": False}
_CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    416: "range_not_satisfiable",
    503: "storage_unavailable",
}


class RangeNotSatisfiable(Exception):
    """The ``Range`` asks for bytes the object does not have (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) of a single-range ``Range`` header.

    ``None`` means "send the whole object": no header, another unit, several ranges or a malformed
    one (RFC 9110 lets a server ignore those). :class:`RangeNotSatisfiable` when the range starts at
    or past the end.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)  # "bytes=-N": the last N bytes
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


@dataclass(frozen=True)
class ByteSpan:
    """What a GET sends of an object: all of it, or the one range it asked for."""

    status: int
    """200 (the whole object) or 206 (a range)."""
    first: int
    length: int
    headers: dict[str, str]
    """``accept-ranges``, ``content-length`` and, for a range, ``content-range``."""


def byte_span(range_header: str | None, size: int) -> ByteSpan:
    """The :class:`ByteSpan` of an object of ``size`` bytes for a request's ``Range`` header;
    :class:`RangeNotSatisfiable` as :func:`parse_range`."""
    byte_range = parse_range(range_header, size)
    headers = {"accept-ranges": "bytes"}
    first, last, status = 0, size - 1, 200
    if byte_range is not None:
        first, last = byte_range
        status = 206
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    headers["content-length"] = str(last - first + 1)
    return ByteSpan(status=status, first=first, length=last - first + 1, headers=headers)


_UPLOAD_REFUSALS: tuple[tuple[type[ObjectStoreError], int], ...] = (
    (AccessDenied, 403),
    (BadDigest, 400),
    (NoSuchUpload, 404),
    (ObjectExists, 409),
)


def upload_refusal_status(exc: ObjectStoreError | OSError) -> int:
    """The HTTP status of a failed :meth:`LocalStorage.receive`: 4xx when the storage refuses
    this body (sending it again changes nothing), 503 when the storage itself failed."""
    for kind, status in _UPLOAD_REFUSALS:
        if isinstance(exc, kind):
            return status
    return 503


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    body = {"success": False, "status": status, "error": _ERROR_CODES[status], "detail": detail}
    return Response(content=body, status_code=status, headers=headers)


def _storage(request: Request[Any, Any, Any]) -> LocalStorage:
    storage = request.app.state.storage
    if not isinstance(storage, LocalStorage):
        raise RuntimeError(
            "the local storage routes are mounted but app.state.storage is not local"
        )
    return storage


def _verify(request: Request[Any, Any, Any], key: str) -> Grant | Response[Any]:
    storage = _storage(request)
    key = key.removeprefix("/")  # a ``path`` parameter keeps its leading slash
    try:
        storage.object_path(key)  # validates the key
    except ValueError as exc:
        return _error(400, f"invalid object key: {exc}")
    query = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
    try:
        return storage.verify(request.method, key, query)
    except AccessDenied as exc:
        return _error(403, str(exc))


async def _file_chunks(path: anyio.Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        await file.seek(start)
        remaining = length
        while remaining > 0:
            data = await file.read(min(_CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data


async def _serve(request: Request[Any, Any, Any], key: str, *, with_body: bool) -> Response[Any]:
    grant = _verify(request, key)
    if isinstance(grant, Response):
        return grant
    storage = _storage(request)
    try:
        info: ObjectInfo | None = await storage.head(grant.key)
    except ObjectStoreError as exc:
        return _error(503, str(exc))
    if info is None:
        return _error(404, "there is no object at this key")
    headers = {
        "accept-ranges": "bytes",
        "etag": f'"{info.sha256}"',
        "cache-control": "private, no-store",
    }
    if grant.filename is not None:
        headers["content-disposition"] = content_disposition(grant.filename)
    try:
        span = byte_span(request.headers.get("range"), info.size)
    except RangeNotSatisfiable:
        return _error(
            416, "the range is outside the object", {"content-range": f"bytes */{info.size}"}
        )
    headers.update(span.headers)
    if not with_body:
        return Response(
            content=b"",
            status_code=span.status,
            headers=headers,
            media_type="application/octet-stream",
        )
    path = anyio.Path(storage.object_path(grant.key))
    return Stream(
        _file_chunks(path, span.first, span.length),
        status_code=span.status,
        headers=headers,
        media_type="application/octet-stream",
    )


def local_storage_handlers() -> list[HTTPRouteHandler]:
    """Fresh route handlers for ``PUT``/``GET``/``HEAD`` ``/storage/o/{key:path}``."""

    @put(
        _ROUTE,
        opt=dict(_OPT),
        request_max_body_size=None,  # archives are many GiB; the signed size bounds a body
        name="local-storage-put",
        include_in_schema=False,
    )
    async def put_object(request: Request[Any, Any, Any], key: FromPath[str]) -> Response[Any]:
        grant = _verify(request, key)
        if isinstance(grant, Response):
            return grant
        try:
            etag = await _storage(request).receive(grant, request.stream())
        except (ObjectStoreError, OSError) as exc:
            status = upload_refusal_status(exc)
            if status == 503:
                return _error(503, f"the server could not store the upload: {exc}")
            return _error(status, str(exc))
        return Response(
            content=b"", status_code=200, headers={"etag": etag}, media_type="text/plain"
        )

    @get(
        _ROUTE,
        opt=dict(_OPT),
        name="local-storage-get",
        include_in_schema=False,
    )
    async def get_object(request: Request[Any, Any, Any], key: FromPath[str]) -> Response[Any]:
        return await _serve(request, key, with_body=True)

    @head(
        _ROUTE,
        opt=dict(_OPT),
        name="local-storage-head",
        include_in_schema=False,
    )
    async def head_object(request: Request[Any, Any, Any], key: FromPath[str]) -> Response[None]:
        return await _serve(request, key, with_body=False)

    return [put_object, get_object, head_object]
