"""Recovery codes and wrapped repository keys: the pure part (no network, no keychain).

A **recovery code** is 160 random bits from the OS CSPRNG, written in Crockford's base32 (no I, L,
O, U: nothing to confuse when copied by hand) as eight groups of four characters, followed by a
ninth group of four check characters (20 bits of a SHA-256 of the code), so that a typo is caught
as "not a valid recovery code" before any slow work::

    7K3Q-M0VX-…-C9D2

The **recovery key** is an X25519 key pair whose private half is argon2id(code, salt): the salt is
made with the code and kept by the server (it is not secret), so the same code gives the same key
on any machine. Its public half is an ``age`` recipient (``age1…``), its private half an ``age``
identity (``AGE-SECRET-KEY-1…``), so a wrapped key (and, later, an encrypted archive) opens with
the standard ``age`` tool too.

A **wrapped repository key** is the repository key encrypted to the recovery recipient in the
``age`` format (X25519 + ChaCha20-Poly1305, authenticated) by ``pyrage``, never by hand.

A wrong code is told by comparing the recipient it derives with the one the server keeps, before
anything is decrypted ("wrong recovery code"); a damaged wrapped key fails age's authentication.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import IntegrityError, InvalidRecoveryCode, WrongRecoveryCode

if TYPE_CHECKING:
    import pyrage

# pyrage, bech32 and argon2 are imported where they are used: every short agent command imports
# this module, and only recovery work needs them.

__all__ = [
    "CODE_BYTES",
    "DEFAULT_KDF",
    "SALT_BYTES",
    "ORGANISATION_SALT",
    "KdfParams",
    "RecoveryKey",
    "format_code",
    "new_recovery_code",
    "new_salt",
    "parse_code",
    "wrap_key",
]

CODE_BYTES = 20  # 160 bits: 32 base32 characters, no padding
SALT_BYTES = 16
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
_DECODE = {c: i for i, c in enumerate(_ALPHABET)} | {"O": 0, "I": 1, "L": 1}
_CHECK_CHARS = 4
_CHECK_DOMAIN = b"backapp recovery code v1"
_PROOF_DOMAIN = b"backapp recovery proof v1"
_AGE_MAGIC = b"age-encryption.org/v1\n"
_KEY_BYTES = 32


def _to_base32(value: int, chars: int) -> str:
    return "".join(_ALPHABET[(value >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def _check(raw: bytes) -> str:
    digest = hashlib.sha256(_CHECK_DOMAIN + raw).digest()
    return _to_base32(int.from_bytes(digest[:3], "big") >> 4, _CHECK_CHARS)


def format_code(raw: bytes) -> str:
    """The written form of the code's 20 bytes, check group included."""
    if len(raw) != CODE_BYTES:
        raise ValueError("a recovery code is 20 bytes")
    text = _to_base32(int.from_bytes(raw, "big"), CODE_BYTES * 8 // 5) + _check(raw)
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def new_recovery_code() -> str:
    """A new code from the OS CSPRNG, in its written form."""
    return format_code(os.urandom(CODE_BYTES))


def parse_code(text: str) -> bytes:
    """The code's 20 bytes; ``InvalidRecoveryCode`` when it is not one (a typo, a missing group).
    Case, spaces and dashes do not matter; O reads as 0, I and L as 1."""
    cleaned = re.sub(r"[\s\-]", "", text).upper()
    body_chars = CODE_BYTES * 8 // 5
    if len(cleaned) != body_chars + _CHECK_CHARS or any(c not in _DECODE for c in cleaned):
        raise InvalidRecoveryCode(
            "not a valid recovery code: it is 9 groups of 4 letters and digits "
            "(as `backapp-agent recovery init` printed it)"
        )
    value = 0
    for c in cleaned[:body_chars]:
        value = value << 5 | _DECODE[c]
    raw = value.to_bytes(CODE_BYTES, "big")
    if not hmac.compare_digest(_check(raw), "".join(_ALPHABET[_DECODE[c]] for c in cleaned[-4:])):
        raise InvalidRecoveryCode(
            "not a valid recovery code: its check group does not match (a character is mistyped)"
        )
    return raw


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """argon2id's cost: ``memory`` in KiB, ``time`` passes, ``lanes`` (parallelism). Written as
    ``argon2id$v=19$m=65536,t=3,p=4`` on the server, beside the salt."""

    memory: int = 65536
    time: int = 3
    lanes: int = 4

    # A server could hand an agent absurd costs to make it hang or run out of memory.
    _BOUNDS = {"memory": (8192, 1048576), "time": (1, 16), "lanes": (1, 16)}

    def text(self) -> str:
        return f"argon2id$v=19$m={self.memory},t={self.time},p={self.lanes}"

    @classmethod
    def parse(cls, text: str) -> KdfParams:
        found = re.fullmatch(r"argon2id\$v=19\$m=(\d{1,8}),t=(\d{1,3}),p=(\d{1,3})", text)
        if not found:
            raise IntegrityError(f"the server's recovery key names an unknown KDF: {text[:60]!r}")
        params = cls(int(found[1]), int(found[2]), int(found[3]))
        for name, (low, high) in cls._BOUNDS.items():
            if not low <= getattr(params, name) <= high:
                raise IntegrityError(f"the server's recovery KDF has an unreasonable {name}")
        return params


DEFAULT_KDF = KdfParams()

ORGANISATION_SALT = b"backapp organisation recovery v1"
"""The organisation code's salt: fixed, so the code alone gives the key on any machine, even
with no server to ask (a salt defends weak secrets against precomputation; a code is 160
random bits). Its cost is ``DEFAULT_KDF``."""


@dataclass(frozen=True, slots=True)
class RecoveryKey:
    """The X25519 key pair a recovery code and salt give. ``recipient`` (``age1…``) is public and
    kept by the server; the identity never leaves this process."""

    recipient: str
    proof: str
    """A value the server keeps only a digest of, to check that whoever rotates the code knew
    the old one. It is derived apart from the private key: it cannot decrypt anything."""
    _identity: pyrage.x25519.Identity

    @classmethod
    def derive(cls, code: str | bytes, salt: bytes, kdf: KdfParams = DEFAULT_KDF) -> RecoveryKey:
        """The key of ``code`` (its written form or its bytes) with ``salt``."""
        import bech32
        import pyrage
        from argon2.low_level import Type, hash_secret_raw

        raw = parse_code(code) if isinstance(code, str) else code
        secret = hash_secret_raw(
            secret=raw,
            salt=salt,
            time_cost=kdf.time,
            memory_cost=kdf.memory,
            parallelism=kdf.lanes,
            hash_len=64,
            type=Type.ID,
        )
        words = bech32.convertbits(secret[:32], 8, 5)
        assert words is not None
        identity = pyrage.x25519.Identity.from_str(
            bech32.bech32_encode("age-secret-key-", words).upper()
        )
        proof = base64.b64encode(hashlib.sha256(_PROOF_DOMAIN + secret[32:]).digest()).decode()
        return cls(str(identity.to_public()), proof, identity)

    @classmethod
    def organisation(cls, code: str | bytes) -> RecoveryKey:
        """The organisation recovery key of ``code`` (``ORGANISATION_SALT``, ``DEFAULT_KDF``)."""
        return cls.derive(code, ORGANISATION_SALT, DEFAULT_KDF)

    def check(self, recipient: str) -> None:
        """``WrongRecoveryCode`` unless this is the key whose public half is ``recipient``."""
        if not hmac.compare_digest(self.recipient.encode(), recipient.encode()):
            raise WrongRecoveryCode(
                "wrong recovery code: it is not the current recovery code of this account"
            )

    def unwrap(self, wrapped: bytes) -> bytes:
        """The repository key inside ``wrapped``; ``IntegrityError`` when it was not wrapped for
        this key or was altered."""
        import pyrage

        if not wrapped.startswith(_AGE_MAGIC):
            raise IntegrityError("the wrapped repository key is damaged (not an age file)")
        try:
            key = pyrage.decrypt(wrapped, [self._identity])
        except pyrage.DecryptError as exc:
            raise IntegrityError(
                "the wrapped repository key is damaged or was not wrapped for this recovery code"
            ) from exc
        if len(key) != _KEY_BYTES:
            raise IntegrityError("the wrapped repository key does not hold a 32-byte key")
        return bytes(key)

    def age_identity(self) -> pyrage.x25519.Identity:
        """The identity itself, to decrypt an ``age`` file with (never printed, never stored)."""
        return self._identity

    def identity_text(self) -> str:
        """The ``AGE-SECRET-KEY-1…`` form, for ``age -d -i``. A secret: print it only when asked."""
        return str(self._identity)

    def __repr__(self) -> str:  # never the identity
        return f"RecoveryKey(recipient={self.recipient!r})"


def wrap_key(repository_key: bytes, recipient: str) -> bytes:
    """``repository_key`` encrypted (``age``, authenticated) for the recovery ``recipient``."""
    import pyrage

    if len(repository_key) != _KEY_BYTES:
        raise ValueError("a repository key is 32 bytes")
    try:
        target = pyrage.x25519.Recipient.from_str(recipient)
    except pyrage.RecipientError as exc:
        raise IntegrityError(f"the server's recovery key is not an age recipient: {exc}") from exc
    return bytes(pyrage.encrypt(repository_key, [target]))


def decode_b64(text: str, what: str) -> bytes:
    """Base64 from the server, or an ``IntegrityError`` that says which value was bad."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IntegrityError(f"the server sent a {what} that is not base64") from exc
