"""Pairing: trade a one-time code from the web console (*Add a machine*) for this machine's own
agent and API key (``POST /api/agent/pair``, docs/agent-api.md "Pairing codes").

The only agent call without an API key. Nothing is retried: a wrong code must not be sent twice
(every failure counts against the server's limit), and a lost answer is better shown than hidden.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from .._errors import ApiError, NetworkError
from .client import _api_error
from .tls import tls_context

__all__ = ["PairedAgent", "redeem_pairing_code"]

PAIR_PATH = "/api/agent/pair"

log = logging.getLogger("desktop_agent.engine.api")


@dataclass(frozen=True, slots=True)
class PairedAgent:
    """The agent a pairing code created. ``api_key`` goes to the keychain, never to a screen."""

    agent_id: str
    name: str
    api_key: str

    def __repr__(self) -> str:  # never the key, even in a traceback's locals
        return f"PairedAgent(agent_id={self.agent_id!r}, name={self.name!r})"


def redeem_pairing_code(
    server_url: str,
    code: str,
    *,
    platform: str | None = None,
    version: str | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
) -> PairedAgent:
    """The new agent for ``code``. ``ApiError`` subclasses say why not, in words the server chose:
    ``NotFoundError`` (no such code), ``ConflictError`` (used or expired: ``body["reason"]``), a 429
    ``ApiError`` (too many wrong codes); ``NetworkError`` when the server did not answer."""
    server = server_url.rstrip("/")
    payload: dict[str, str] = {"code": code.strip()}
    if platform:
        payload["platform"] = platform
    if version:
        payload["version"] = version[:64]
    try:
        with httpx.Client(
            base_url=server,
            headers={"User-Agent": "backapp-agent", "Accept": "application/json"},
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
            verify=tls_context(),
        ) as http:
            response = http.post(PAIR_PATH, json=payload)
    except httpx.HTTPError as exc:
        # Words for people; the exception's own text (errno and all) is in the chained cause.
        log.debug("pairing with %s failed: %r", server, exc)
        raise NetworkError(
            f"the server did not answer at {server}: check the address and that this computer "
            "can reach it"
        ) from exc
    if response.status_code >= 400:
        raise _api_error(response, PAIR_PATH)
    try:
        agent = response.json()["agent"]
        return PairedAgent(
            agent_id=str(agent["id"]), name=str(agent["name"]), api_key=str(agent["apiKey"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(
            response.status_code,
            "bad_response",
            f"{server} did not answer like a BackApp server",
            path=PAIR_PATH,
        ) from exc
