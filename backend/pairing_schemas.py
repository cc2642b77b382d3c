"""Request and response shapes of pairing codes (``docs/agent-api.md``, "Pairing codes"): the
owner's ``POST /api/agents/pairing-codes`` and the new machine's ``POST /api/agent/pair``."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from backend.schemas import Camel, Name, RegisteredAgent, ShortText

__all__ = ["PairRequest", "PairResponse", "PairingCodeOut", "PairingCodeRequest"]


class PairingCodeRequest(Camel):
    name: Name
    """The name the new agent gets (the machine's, usually)."""


class PairingCodeOut(Camel):
    code: str
    """``K7Q-4MX-P2D``: shown once; the server keeps only its digest."""
    expires_at: str
    name: str
    success: bool = True


class PairRequest(Camel):
    code: Annotated[str, Meta(min_length=1, max_length=64)]
    """As typed: case, dashes and spaces do not matter."""
    platform: Annotated[str, Meta(max_length=32)] | None = None
    version: ShortText | None = None


class PairResponse(Camel):
    agent: RegisteredAgent
    """The new agent, with its API key: store it in the keychain, never show it."""
    success: bool = True
