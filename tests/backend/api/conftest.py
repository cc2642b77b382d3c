"""Fixtures of the API's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from backend.app import create_app
from backend.services import Services
from backend.settings import Settings
from tests.support.api import ApiClient


@pytest.fixture
async def app_client(
    settings: Settings, services: Services
) -> AsyncIterator[tuple[Litestar, ApiClient]]:
    """Like ``client``, but the app itself is at hand too (for raw ASGI WebSockets)."""
    app = create_app(settings, services)
    await app.state.runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://testserver.local",
        ) as raw:
            yield app, ApiClient(raw)
    finally:
        await app.state.runtime.stop()
