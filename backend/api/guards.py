"""What every JSON API request must be before a handler sees it.

* **JSON only.** A POST, PUT, PATCH or DELETE under ``/api/`` that carries a body carries
  ``Content-Type: application/json`` (415 otherwise). An HTML form can only send
  ``application/x-www-form-urlencoded``, ``multipart/form-data`` or ``text/plain``, and a script on
  another site can send JSON only after a CORS preflight that this server never grants: so no other
  site can make a visitor's browser sign in, sign up or change anything through the API.
* **Not from another site.** Browsers say where a request comes from (``Sec-Fetch-Site``, or else
  ``Origin``); an unsafe request that another site started is refused (403) before anything else,
  sign-in and sign-up included. Agents and scripts send neither header and are unaffected.
* **Bounded nesting.** A JSON body nested deeper than :data:`MAX_JSON_DEPTH` levels is a 400 before
  it is decoded (the decoder would otherwise recurse until Python's limit: a 500).

Signed-in requests also need the session's CSRF token (:func:`backend.api.deps.provide_user`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from backend.errors import Forbidden, InvalidInput, UnsupportedMediaType

__all__ = [
    "MAX_JSON_DEPTH",
    "ApiRequest",
    "api_guard",
    "check_json_depth",
    "is_cross_site",
    "json_too_deep",
]

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON body may have (the API's own shapes use ~5)."""

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of ``body`` nest deeper than ``limit``.

    Runs at C speed: strings are blanked out, everything but brackets deleted, and innermost
    pairs removed level by level (at most ``limit + 1`` passes over what is left). A malformed
    document is left to the decoder, which refuses it with its own message.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if not shorter or shorter == brackets:
            return False
        brackets = shorter
    return True


def check_json_depth(body: bytes | str) -> None:
    """:class:`InvalidInput` when ``body`` nests deeper than :data:`MAX_JSON_DEPTH`."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if json_too_deep(raw):
        raise InvalidInput(
            f"body: JSON nested more than {MAX_JSON_DEPTH} levels deep", field="body"
        )


class ApiRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is checked for depth before it is decoded."""

    async def json(self) -> Any:
        check_json_depth(await self.body())
        return await super().json()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def is_cross_site(connection: ASGIConnection[Any, Any, Any, Any], public_url: str) -> bool:
    """Whether a browser says this request was started by a page of another site (or origin).

    ``Sec-Fetch-Site`` decides when present (``same-origin`` and ``none``, a typed address or a
    bookmark, pass); else ``Origin``, which must be this server's own: the one in
    ``BACKAPP_PUBLIC_URL`` or the one the request was addressed to (``Host``). No header at all is
    not a browser: agents and scripts carry their own credentials.
    """
    fetch_site = connection.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    origin = connection.headers.get("origin")
    if origin is None:
        return False
    parts = urlsplit(origin.strip())
    if not parts.scheme or not parts.netloc:
        return True  # "null": a sandboxed frame, a data: URL, a redirect across sites
    own = urlsplit(public_url)
    if (parts.scheme.lower(), parts.netloc.lower()) == (own.scheme.lower(), own.netloc.lower()):
        return False
    host = connection.headers.get("host", "")
    return parts.netloc.lower() != host.strip().lower()


def api_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The JSON API's rules for unsafe requests (see the module docstring)."""
    scope: Any = connection.scope
    if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
        return
    if is_cross_site(connection, connection.app.state.settings.base_url):
        raise Forbidden(
            "cross-site request refused: this API accepts changes only from this server's own "
            "pages, agents and scripts"
        )
    content_type = connection.headers.get("content-type")
    if content_type is not None:
        if not _is_json(content_type):
            raise UnsupportedMediaType(
                f"send the body as JSON with content-type: application/json, not {content_type[:100]}"
            )
        return
    length = connection.headers.get("content-length")
    chunked = "chunked" in connection.headers.get("transfer-encoding", "").lower()
    if chunked or (length is not None and length.strip() not in ("", "0")):
        raise UnsupportedMediaType("send the body as JSON with content-type: application/json")
