"""Signed agent builds: what a release signature covers, and how an agent checks one.

A release is one frozen agent build for one platform. Its publisher signs it with an Ed25519 key
that the server never holds; the public half is built into the agent. The server only stores the
build and its signature and hands both to agents, so a server (or a bucket) that is taken over
cannot push a build of its own: the agent refuses anything the release key did not sign.

The signature covers the platform, the version, the build's SHA-256 and its size, not only the
bytes: a genuine build for another platform, or an older genuine build offered as a newer one,
fails the check too.

Both sides use this module: the server checks a build when it is added (``backapp agent-release
add``), and the agent checks it again after the download, before anything is swapped.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PLATFORMS",
    "RELEASE_KEY_ENV",
    "BadRelease",
    "parse_public_key",
    "release_message",
    "release_public_key",
    "sign_release",
    "verify_release",
]

#: The platforms a release is built for: the values of ``sys.platform`` agents send in heartbeats.
PLATFORMS = ("linux", "darwin", "win32")

#: Replaces the built-in release key (base64 of the 32-byte raw Ed25519 public key), for people who
#: build and sign their own agents. Read by the agent only; the server never sends a key.
RELEASE_KEY_ENV = "BACKAPP_RELEASE_PUBLIC_KEY"

# The project's release key (raw Ed25519 public key, base64). Builds signed by anyone else are
# refused unless the machine's owner sets RELEASE_KEY_ENV.
_BUILT_IN_KEY = "yLOUjbuo1/hsf7RenlDq4ug1H5W2NMh0WrGL7aabsbg="

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BadRelease(ValueError):
    """A release whose fields or signature do not check out; the message says which, in words."""


def release_message(platform: str, version: str, sha256: str, size: int) -> bytes:
    """The exact bytes a release signature covers."""
    if platform not in PLATFORMS:
        raise BadRelease(f"unknown platform {platform!r} (one of: {', '.join(PLATFORMS)})")
    if not version or any(c.isspace() for c in version):
        raise BadRelease(f"not a version: {version!r}")
    if not _SHA256.match(sha256):
        raise BadRelease("the SHA-256 must be 64 lowercase hexadecimal digits")
    if size <= 0:
        raise BadRelease("a build cannot be empty")
    return f"backapp-agent-release\n{platform}\n{version}\n{sha256}\n{size}\n".encode()


def sign_release(
    private_key: Ed25519PrivateKey, platform: str, version: str, sha256: str, size: int
) -> str:
    """The base64 signature of one release (run by the publisher, never by the server)."""
    signature = private_key.sign(release_message(platform, version, sha256, size))
    return base64.b64encode(signature).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A release public key from base64 of its 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRelease("the release key is not base64") from exc
    if len(raw) != 32:
        raise BadRelease("a release key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def release_public_key() -> Ed25519PublicKey:
    """The key this agent trusts: ``RELEASE_KEY_ENV`` when set, else the built-in one."""
    return parse_public_key(os.environ.get(RELEASE_KEY_ENV) or _BUILT_IN_KEY)


def verify_release(
    public_key: Ed25519PublicKey,
    platform: str,
    version: str,
    sha256: str,
    size: int,
    signature: str,
) -> None:
    """Raise :class:`BadRelease` unless ``signature`` is the release key's over these fields."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRelease("the signature is not base64") from exc
    try:
        public_key.verify(raw, release_message(platform, version, sha256, size))
    except InvalidSignature as exc:
        raise BadRelease("the build is not signed by the release key") from exc
