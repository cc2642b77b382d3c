"""Rendering: the Jinja environment, static asset URLs, the page helper, flash messages, headers."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request
from litestar.datastructures import Cookie
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template import TemplateConfig

from backend import __version__
from backend.services import CurrentUser, Services
from backend.services.cursors import Cursor
from backend.web import _format
from backend.web._status_text import progress_percent, progress_text, schedule_text

__all__ = [
    "FLASH_COOKIE",
    "LIVE_HEADER",
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "TEMPLATE_DIR",
    "make_environment",
    "page",
    "redirect",
    "search_listing",
    "static_url",
    "template_config",
]

HERE = Path(__file__).resolve().parent
TEMPLATE_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

FLASH_COOKIE = "backapp_flash"
LIVE_HEADER = "x-backapp-live"
"""Sent by app.js when it refreshes one live region: the page answers with that region only."""

# Pages load nothing from elsewhere and run no inline code: a stray unescaped string could not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@cache
def _asset_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """``/static/app.css?v=<content hash>``: safe to cache for long, busted on every change."""
    return f"/static/{name}?v={_asset_version(name)}"


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        # Every user-supplied string is escaped unless a template says otherwise (none do).
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        filesize=_format.filesize,
        duration=_format.duration,
        ago=_format.ago,
        utc=_format.utc,
        json=_format.compact_json,
        log_details=_format.log_details,
        platform=_format.platform,
        progress_text=progress_text,
        progress_percent=progress_percent,
        schedule=schedule_text,
    )
    env.globals.update(static=static_url, version=__version__)
    return env


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(make_environment()))


def _flash_cookie(value: str, services: Services) -> Cookie:
    return Cookie(
        key=FLASH_COOKIE,
        value=quote(value[:300], safe="") if value else "",
        max_age=60 if value else 0,
        httponly=True,
        samesite="lax",
        secure=services.settings.secure_cookies,
        path="/",
    )


LIVE_POLL_MS = 5000
"""How often pages poll their live regions when live events cannot reach them (see ``page``)."""


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    user: CurrentUser | None,
    services: Services,
    status_code: int = 200,
    live: dict[str, str] | None = None,
    cookies: list[Cookie] | None = None,
    **context: Any,
) -> Template:
    """A full page, or only one of its live regions when app.js asks for it (``live`` maps region
    names to their partial templates, which get the same context)."""
    context.setdefault("csrf_token", "")
    if user is not None:
        context["csrf_token"] = user.csrf_token
    context.update(user=user, path=request.url.path, flash=None)
    # Several worker processes without Redis: an event reaches only the pages of the process that
    # published it, so the pages fall back to polling their live regions (LIVE_POLL_MS).
    context["live_poll_ms"] = (
        LIVE_POLL_MS if services.live.kind != "redis" and services.settings.workers > 1 else None
    )
    headers = {**SECURITY_HEADERS, "vary": "X-Backapp-Live"}
    region = request.headers.get(LIVE_HEADER)
    if region and live and region in live:
        return Template(live[region], context=context, headers=headers, status_code=status_code)
    cookies = list(cookies or [])
    flash = request.cookies.get(FLASH_COOKIE)
    if flash:
        context["flash"] = unquote(flash)
        cookies.append(_flash_cookie("", services))
    return Template(
        template, context=context, headers=headers, cookies=cookies, status_code=status_code
    )


def redirect(
    path: str, services: Services, *, flash: str | None = None, cookies: list[Cookie] | None = None
) -> Redirect:
    """303 See Other (the POST-redirect-GET step), optionally with a one-time message."""
    all_cookies = list(cookies or [])
    if flash:
        all_cookies.append(_flash_cookie(flash, services))
    return Redirect(path, status_code=303, cookies=all_cookies)


def search_listing(
    services: Services,
    kind: str,
    user: CurrentUser,
    search: str,
    position: Cursor | None,
    more: Cursor | None,
) -> dict[str, Any]:
    """What the template of a searchable keyset-paged list page ``kind`` gets besides its rows:
    ``search``, the query string of its first-page link (``query``), whether this is a later page
    (``paged``, it started at ``position``) and the link to the next page (``next_href``: keyset
    cursor ``more``; ``None`` on the last page)."""
    query = urlencode({"q": search}) if search else ""
    cursor = services.cursors.next_after(kind, user.id, more)
    next_href = None
    if cursor is not None:
        next_href = f"/{kind}?" + urlencode({**({"q": search} if search else {}), "after": cursor})
    return {"search": search, "query": query, "paged": position is not None, "next_href": next_href}
