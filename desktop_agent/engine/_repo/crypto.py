"""The repository's keys and its one sealing primitive (see ``docs/repository-format.md``).

Nothing here is hand-made cryptography: HKDF-SHA256 and AES-256-GCM come from ``cryptography``,
keyed BLAKE3 from ``blake3``. This module only fixes how they are combined.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CorruptObject

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES

_INFO_ENC = b"backapp repository v1 encryption"
_INFO_ID = b"backapp repository v1 blob id"
_INFO_SEED = b"backapp repository v1 chunker seed"

# BLAKE3 releases the GIL and may use several threads on large inputs; chunks are at most 8 MiB,
# and the pipeline already runs one hashing thread per core, so one thread per call is right.
_HASH_THREADS = 1


def new_repository_key() -> bytes:
    """A fresh 256-bit repository key from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def _hkdf(key: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


@dataclass(frozen=True, slots=True)
class RepoKeys:
    """The keys derived from one repository key, and the operations that use them.

    ``nonce`` is the source of AES-GCM nonces: random in use, fixed in the format's test vectors.
    Thread-safe (``AESGCM`` and the BLAKE3 key are immutable).
    """

    enc_key: bytes
    id_key: bytes
    chunker_seed: int
    nonce: Callable[[int], bytes] = field(default=os.urandom, repr=False, compare=False)
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aead", AESGCM(self.enc_key))

    @classmethod
    def derive(
        cls, repository_key: bytes, *, nonce: Callable[[int], bytes] = os.urandom
    ) -> RepoKeys:
        if len(repository_key) != KEY_BYTES:
            raise ValueError("a repository key is 32 bytes")
        # 63 bits: the chunker also uses the seed shifted left by one, within 64 bits.
        seed = int.from_bytes(_hkdf(repository_key, _INFO_SEED, 8), "little") & ((1 << 63) - 1)
        return cls(
            enc_key=_hkdf(repository_key, _INFO_ENC),
            id_key=_hkdf(repository_key, _INFO_ID),
            chunker_seed=seed,
            nonce=nonce,
        )

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed BLAKE3 id of a blob's plaintext."""
        return blake3.blake3(data, key=self.id_key, max_threads=_HASH_THREADS).digest()

    def seal(self, aad: bytes, plaintext: bytes | memoryview) -> bytes:
        """``nonce ‖ AES-256-GCM(plaintext, aad)``."""
        nonce = self.nonce(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, bytes(plaintext), aad)

    def open(self, aad: bytes, sealed: bytes | memoryview, *, what: str) -> bytes:
        """The plaintext of ``seal(aad, …)``; ``CorruptObject`` naming ``what`` if it was changed,
        cut, or sealed with another key."""
        if len(sealed) < SEAL_OVERHEAD:
            raise CorruptObject(f"{what} is truncated")
        view = memoryview(sealed)
        try:
            # The sealed bytes are read in place (no copy of a blob-sized ciphertext).
            return self._aead.decrypt(bytes(view[:NONCE_BYTES]), view[NONCE_BYTES:], aad)
        except InvalidTag:
            raise CorruptObject(
                f"{what} cannot be decrypted: it was damaged, or it belongs to another key"
            ) from None
