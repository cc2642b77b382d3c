"""Secrets: API keys (HMAC digests), passwords (argon2id), session and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "API_KEY_PREFIX",
    "api_key_digest",
    "hash_password",
    "new_api_key",
    "new_token",
    "password_needs_rehash",
    "token_hash",
    "verify_password",
]

API_KEY_PREFIX = "bka_"

_hasher = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters
# A hash to verify against when the account does not exist, so both paths cost the same.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def new_api_key() -> str:
    """A 256-bit random key with a recognisable prefix (``bka_`` + 43 url-safe characters)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_digest(secret: bytes, api_key: str) -> str:
    """The keyed digest stored and looked up instead of the key (HMAC-SHA256, hex)."""
    return hmac.new(secret, api_key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
