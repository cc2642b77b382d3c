"""Who is asking: the page session, the CSRF check of every form, and what errors look like.

Pages share the JSON API's session (cookie ``backapp_session``) and its per-session CSRF token. A
form carries the token in a hidden ``_csrf`` field (a script may send the ``x-csrftoken`` header
instead); it is checked with ``AccountService.csrf_ok`` before the handler runs.

The sign-in and sign-up forms come before any session, so they use a signed double-submit token: a
random value, HMAC-signed with the server secret, set as the ``csrftoken`` cookie and repeated in
the form. A cross-site page can neither read the cookie nor mint a valid token of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import quote

from litestar import Controller, MediaType, Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from backend.api.deps import CSRF_COOKIE, CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, ServicesDep
from backend.errors import DomainError, Forbidden, NotAuthenticated
from backend.services import CurrentUser, Services
from backend.web._render import LIVE_HEADER, SECURITY_HEADERS

__all__ = [
    "CSRF_FIELD",
    "CsrfRejected",
    "PageController",
    "PageUserDep",
    "SignInRequired",
    "anon_csrf_cookie",
    "anon_csrf_ok",
    "anon_csrf_token",
    "optional_user",
    "provide_page_user",
    "safe_next",
    "web_exception_handlers",
]

log = logging.getLogger("backapp.web")

CSRF_FIELD = "_csrf"
_ANON_PREFIX = "anon."

PageUserDep = NamedDependency[CurrentUser]


class SignInRequired(Exception):
    """No valid session: a page redirects to the sign-in form (and comes back afterwards)."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


class CsrfRejected(Forbidden):
    """A form without the right CSRF token: refused before anything changes."""


def safe_next(value: str | None) -> str:
    """Only a path on this site: never ``//evil.example`` or ``https://…`` (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 32 for c in value):
        return "/"
    return value


async def optional_user(request: Request[Any, Any, Any], services: Services) -> CurrentUser | None:
    return await services.accounts.user_for_session(request.cookies.get(SESSION_COOKIE))


async def provide_page_user(request: Request[Any, Any, Any], services: ServicesDep) -> CurrentUser:
    """The signed-in user; for POST (and any unsafe method) only with the session's CSRF token."""
    user = await optional_user(request, services)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method in SAFE_METHODS else "/")
    if request.method not in SAFE_METHODS:
        form = await request.form()
        supplied = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not services.accounts.csrf_ok(user, supplied if isinstance(supplied, str) else None):
            raise CsrfRejected(
                "This form could not be accepted: it has expired or did not come from this site. "
                "Go back, reload the page and try again."
            )
    return user


class PageController(Controller):
    """A controller of pages for the signed-in user (``PageUserDep``), kept out of the API schema."""

    include_in_schema = False
    dependencies = {"user": Provide(provide_page_user)}


# --- the pre-session token of the sign-in and sign-up forms -----------------------------------


def _sign(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, f"backapp-anon-csrf:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def anon_csrf_token(request: Request[Any, Any, Any], services: Services) -> str:
    """The browser's current pre-session token if it is valid, else a new one."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and _anon_valid(current, services.settings.secret_key):
        return current
    nonce = secrets.token_urlsafe(24)
    return f"{_ANON_PREFIX}{nonce}.{_sign(services.settings.secret_key, nonce)}"


def _anon_valid(token: str, secret: bytes) -> bool:
    if not token.startswith(_ANON_PREFIX) or len(token) > 200:
        return False
    nonce, _, signature = token[len(_ANON_PREFIX) :].rpartition(".")
    return bool(nonce) and hmac.compare_digest(signature, _sign(secret, nonce))


def anon_csrf_ok(request: Request[Any, Any, Any], supplied: str | None, services: Services) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    return (
        bool(supplied)
        and hmac.compare_digest(cookie, supplied or "")
        and _anon_valid(cookie, services.settings.secret_key)
    )


def anon_csrf_cookie(token: str, services: Services) -> Cookie:
    return Cookie(
        key=CSRF_COOKIE,
        value=token,
        max_age=services.settings.session_days * 86400,
        httponly=False,
        samesite="lax",
        secure=services.settings.secure_cookies,
        path="/",
    )


# --- errors as pages ----------------------------------------------------------------------------

_TITLES = {
    400: "That request was not valid",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "That cannot be done right now",
    429: "Too many attempts",
    503: "Storage is unavailable",
}


def _error_page(status: int, detail: str) -> Response[Any]:
    title = _TITLES.get(status, "Something went wrong")
    return Template(
        "error.html",
        context={"status": status, "title": title, "detail": detail, "user": None},
        status_code=status,
        headers=dict(SECURITY_HEADERS),
        media_type=MediaType.HTML,
    )


def _sign_in_required(request: Request[Any, Any, Any], exc: SignInRequired) -> Response[Any]:
    if request.headers.get(LIVE_HEADER):
        # A live refresh after the session ended: app.js reloads, which lands on the sign-in form.
        return Response(b"", status_code=401, headers=dict(SECURITY_HEADERS))
    target = safe_next(exc.next_path)
    query = f"?next={quote(target, safe='/')}" if target != "/" else ""
    return Redirect(f"/signin{query}", status_code=303)


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    if isinstance(exc, NotAuthenticated):
        return _sign_in_required(request, SignInRequired(request.url.path))
    return _error_page(exc.status_code, exc.detail)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = "The address or the form was not what this page expects."
    if exc.status_code == 404:
        detail = "There is nothing at this address."
    return _error_page(exc.status_code, detail)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return _error_page(500, "The server hit an unexpected error. It has been logged.")


def web_exception_handlers() -> ExceptionHandlersMap:
    return {
        SignInRequired: _sign_in_required,
        DomainError: _domain_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
