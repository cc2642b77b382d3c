"""The release signature: what it covers and what it refuses."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from desktop_agent.engine import releases

SHA = "ab" * 32


def test_a_signature_covers_every_field() -> None:
    key = Ed25519PrivateKey.generate()
    signature = releases.sign_release(key, "linux", "1.2.0", SHA, 1000)
    releases.verify_release(key.public_key(), "linux", "1.2.0", SHA, 1000, signature)
    for platform, version, sha, size in [
        ("darwin", "1.2.0", SHA, 1000),
        ("linux", "1.1.0", SHA, 1000),
        ("linux", "1.2.0", "cd" * 32, 1000),
        ("linux", "1.2.0", SHA, 1001),
    ]:
        with pytest.raises(releases.BadRelease, match="not signed by the release key"):
            releases.verify_release(key.public_key(), platform, version, sha, size, signature)


def test_another_key_is_refused() -> None:
    signature = releases.sign_release(Ed25519PrivateKey.generate(), "win32", "2.0", SHA, 5)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(releases.BadRelease):
        releases.verify_release(other, "win32", "2.0", SHA, 5, signature)


@pytest.mark.parametrize(
    ("platform", "version", "sha", "size", "words"),
    [
        ("plan9", "1.0", SHA, 5, "unknown platform"),
        ("linux", "1 0", SHA, 5, "not a version"),
        ("linux", "1.0", "XYZ", 5, "SHA-256"),
        ("linux", "1.0", SHA, 0, "empty"),
    ],
)
def test_bad_fields_are_named(platform: str, version: str, sha: str, size: int, words: str) -> None:
    with pytest.raises(releases.BadRelease, match=words):
        releases.release_message(platform, version, sha, size)


def test_the_key_from_the_environment_replaces_the_built_in_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    monkeypatch.setenv(releases.RELEASE_KEY_ENV, base64.b64encode(raw).decode())
    signature = releases.sign_release(key, "linux", "3.0", SHA, 9)
    releases.verify_release(releases.release_public_key(), "linux", "3.0", SHA, 9, signature)
    monkeypatch.setenv(releases.RELEASE_KEY_ENV, "not base64!")
    with pytest.raises(releases.BadRelease, match="not base64"):
        releases.release_public_key()
