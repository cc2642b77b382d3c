"""The OpenAPI schema's error responses: the body the API really sends, for each operation.

Litestar documents a 400 of its own shape (``status_code``, ``detail``, ``extra``) on every
operation that validates input; every error of this API is an :class:`~backend.schemas.ErrorResponse`
(``{"success": false, "status", "error", "detail", "field"}``). :func:`document_errors` gives each
JSON API operation the statuses it can answer, each with that body.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from backend.schemas import ErrorResponse

__all__ = ["document_errors", "error_statuses"]

_WHAT = {
    400: "Bad request: a value is missing or wrong (`field` names it when it is one field)",
    401: "Not signed in (no valid session), or a missing, unknown or revoked agent key",
    403: "Not allowed: no CSRF token, a request started by another site, or not permitted",
    404: "Not found for this caller",
    409: "Conflict: the current state forbids it",
    415: "The body is not JSON (send content-type: application/json)",
    429: "Too many attempts: wait Retry-After seconds",
    503: "Object storage did not answer; safe to retry",
}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
_STORAGE = ("/api/agent/backup/", "/api/agent/restore", "/api/backups/{backup_id:str}/download")


def error_statuses(path: str, methods: Iterable[str], parameters: Iterable[str]) -> set[int]:
    """The error statuses an operation at ``path`` can answer, from what it takes: a session
    (``user``), an agent key (``agent``), path parameters, a body, storage."""
    names = set(parameters)
    unsafe = bool(_UNSAFE & set(methods))
    codes = {400}
    if unsafe:
        codes |= {403, 415}
    if path == "/api/auth/login":
        codes |= {401, 429}
    elif path == "/api/auth/signup":
        codes |= {403, 409}
    if "user" in names:
        codes |= {401}
        if "{" in path:
            codes |= {404}
        if unsafe and "{" in path:
            codes |= {409}
    if "agent" in names:
        codes |= {401, 404, 409, 429}
    if path.startswith(_STORAGE):
        codes |= {409, 503}
    return codes


def document_errors(routes: Iterable[Any]) -> None:
    """Give every ``/api/`` operation of ``routes`` (``app.routes``) its error responses."""
    for route in routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not route.path.startswith("/api/"):
                continue
            if route.path == "/api/health":
                continue
            parameters = inspect.signature(handler.fn).parameters
            codes = error_statuses(route.path, handler.http_methods, parameters)
            documented = {
                status: ResponseSpec(
                    data_container=ErrorResponse, description=_WHAT[status], generate_examples=False
                )
                for status in sorted(codes)
            }
            handler.responses = {**documented, **(handler.responses or {})}
