"""A release key for tests and builds signed with it (the server side of auto-update)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from desktop_agent.engine.releases import sign_release

__all__ = ["OTHER_KEY", "RELEASE_KEY", "public_b64", "signed_build"]

#: The tests' release key; the server trusts it when ``BACKAPP_RELEASE_PUBLIC_KEY`` names it.
RELEASE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
#: A key the server does not trust (a build signed by anyone else).
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def public_b64(key: Ed25519PrivateKey = RELEASE_KEY) -> str:
    """What ``BACKAPP_RELEASE_PUBLIC_KEY`` holds for ``key``."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def signed_build(
    folder: Path,
    platform: str,
    version: str,
    *,
    content: bytes | None = None,
    key: Ed25519PrivateKey = RELEASE_KEY,
) -> tuple[Path, str]:
    """A made-up build file for ``platform``/``version`` and its signature by ``key``."""
    data = content if content is not None else f"agent {platform} {version}\n".encode() * 100
    path = folder / f"build-{platform}-{version}"
    path.write_bytes(data)
    signature = sign_release(key, platform, version, hashlib.sha256(data).hexdigest(), len(data))
    return path, signature
