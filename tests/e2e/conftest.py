"""Fixtures of the end-to-end tests: the real browser (the live server is ``live_server_factory``
in the root ``conftest.py``).

The browser's helpers are imported where a fixture needs them: ``tests.support.browser`` skips
whoever imports it when Playwright is missing, and that must be the browser tests, not all of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.faults import FaultProxy
from tests.support.s3 import S3Endpoint


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from tests.support.browser import CHROMIUM_ARGS, chromium_executable, playwright_api

    executable = chromium_executable()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    from tests.support.browser import DESKTOP

    ctx = chromium.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC")
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A rejected form answers 4xx on purpose; a stylesheet, script or live refresh must not.
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )
    yield page
    assert errors == [], f"the page reported errors: {errors}"


@pytest.fixture
def proxy(s3_server: S3Endpoint) -> Iterator[FaultProxy]:
    host, port = s3_server.endpoint_url.removeprefix("http://").rsplit(":", 1)
    faulty = FaultProxy(host, int(port))
    yield faulty
    faulty.close()
