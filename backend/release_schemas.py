"""Request and response shapes of the owner's update policy (``/api/agent-updates``,
docs/owner-api.md). The policy's words are checked by the service, which names the field."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from backend.schemas import Camel


class UpdatePolicyIn(Camel, forbid_unknown_fields=True):
    policy: Annotated[str, Meta(max_length=16)]
    """``latest``, ``pin`` or ``hold``."""
    version: Annotated[str, Meta(max_length=64)] | None = None
    """The version to pin to (``pin`` only)."""


class ReleaseOut(Camel):
    platform: str
    version: str
    size: int
    sha256: str
    created_at: str | None


class UpdatePolicyResponse(Camel):
    policy: str
    version: str | None
    releases: list[ReleaseOut] = msgspec.field(default_factory=list)
    """The builds stored for agents, by platform, newest first (what a pin can name)."""
    success: bool = True
