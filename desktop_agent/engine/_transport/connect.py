"""The agent's two clients from its settings: the server's agent API and the storage's pre-signed
URLs. Apart from the backup engine, so that a restore or a listing builds them without loading it."""

from __future__ import annotations

import httpx

from ... import __version__
from .._errors import ConfigurationError
from .._settings import AgentSettings
from ..protocol import AgentMode
from .client import ApiClient
from .storage import HttpStorage

__all__ = ["connect"]


def connect(
    settings: AgentSettings,
    api_key: str,
    transport: httpx.BaseTransport | None = None,
    *,
    mode: AgentMode | None = None,
) -> tuple[ApiClient, HttpStorage]:
    """The agent's two clients, to ``settings.server_url`` with ``api_key`` (its heartbeats saying
    ``mode``) and to the storage's pre-signed URLs. The caller closes them."""
    if not settings.server_url:
        raise ConfigurationError("no server URL: run `backapp-agent configure --server URL` first")
    agent = f"backapp-agent/{__version__}"
    plane = ApiClient(
        settings.server_url, api_key, transport=transport, user_agent=agent, mode=mode
    )
    storage = HttpStorage.for_settings(settings, user_agent=agent, transport=transport)
    return plane, storage
