"""Fixtures of the service tests that need the app on a real S3 endpoint (retention, pruning)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from backend.app import create_app
from backend.services import Services
from backend.settings import Settings
from tests.support.api import ApiClient
from tests.support.s3 import S3Endpoint, s3_storage
from tests.support.settings import make_settings


@pytest.fixture
async def s3_app(
    tmp_path: Path, db_url: str, s3_server: S3Endpoint, s3_bucket: str
) -> AsyncIterator[tuple[ApiClient, Services]]:
    settings: Settings = make_settings(tmp_path, db_url, s3_bucket=s3_bucket)
    services = Services.build(settings, s3_storage(s3_server, s3_bucket))
    app = create_app(settings, services)
    await app.state.runtime.start()
    await services.tasks.started()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as raw:
            yield ApiClient(raw), services
    finally:
        await app.state.runtime.stop()
