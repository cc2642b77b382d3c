"""Helpers for the web console's tests: a browser-like client that posts forms with the token."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.api import ApiClient

_CSRF_FIELD = re.compile(r'name="_csrf" value="([^"]*)"')


def csrf_in(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF_FIELD.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def local_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


class Browser:
    """What a browser without scripts does: GET pages, POST forms with the page's hidden token."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.http: httpx.AsyncClient = api.raw

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        response: httpx.Response = await self.http.get(path, **kw)
        return response

    async def submit(
        self, page: str, action: str, fields: dict[str, Any], **kw: Any
    ) -> httpx.Response:
        """Load ``page``, take its CSRF token, POST ``fields`` to ``action``."""
        shown = await self.get(page)
        assert shown.status_code == 200, shown.text
        response: httpx.Response = await self.http.post(
            action, data={"_csrf": csrf_in(shown.text), **fields}, **kw
        )
        return response

    async def agent_run(
        self, key: str, config_id: str, payload: bytes = b"hello world", filename: str = "b.tar.gz"
    ) -> dict[str, Any]:
        """Heartbeat, start, PUT, complete: what an agent does for one config."""
        hb = await self.api.agent_post(key, "/api/agent/heartbeat", {"version": "0.1.0"})
        assert hb.status_code == 200, hb.text
        start = await self.api.agent_post(
            key,
            "/api/agent/backup/start",
            {"configId": config_id, "filename": filename, "filesize": len(payload)},
        )
        assert start.status_code == 200, start.text
        put = await self.http.put(local_path(start.json()["upload"]["url"]), content=payload)
        assert put.status_code == 200, put.text
        done = await self.api.agent_post(
            key,
            "/api/agent/backup/complete",
            {
                "logId": start.json()["logId"],
                "status": "completed",
                "filesProcessed": 3,
                "bytesTransferred": len(payload),
                "duration": 1500,
                "errors": [{"path": "/home/me/locked.db", "message": "permission denied"}],
            },
        )
        assert done.status_code == 200, done.text
        return dict(start.json())
