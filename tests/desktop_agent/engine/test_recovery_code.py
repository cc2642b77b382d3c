"""Recovery codes and wrapped keys, the pure part: the written form (fixed vectors), typos and
malformed codes, argon2id -> X25519 checked against an independent computation, wrapping that
is authenticated, and the snapshot's quiet upload of its wrapped key."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import bech32
import pyrage
import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from desktop_agent.engine import (
    IntegrityError,
    InvalidRecoveryCode,
    KdfParams,
    RecoveryInfo,
    RecoveryKey,
    WrongRecoveryCode,
    format_code,
    keep_wrapped,
    new_recovery_code,
    parse_code,
    wrap_key,
)

RAW = bytes(range(20))
CODE = "000G-40R4-0M30-E209-185G-R38E-1W81-24GK-Y7DY"
FAST = KdfParams(memory=8192, time=1, lanes=1)
SALT = bytes(16)
RECIPIENT = "age1s8p3g4v3ppjltzcej2vfwn0nsx5x7f2xttnhj4h0vxrqtz6dpcrsy8ezmj"
RECIPIENT_DEFAULT_KDF = "age17agssr25fgt07lgzzk5vwy7798jk4hy9qam2u8exa9jl03p8hsxs2x904g"


def test_the_written_form_is_fixed_and_reads_back() -> None:
    assert format_code(RAW) == CODE
    assert parse_code(CODE) == RAW
    # As a person may type it: lower case, spaces, O for 0, I or L for 1.
    typed = CODE.lower().replace("-", " ")
    assert parse_code(typed) == RAW
    assert parse_code(CODE.replace("0", "O").replace("1", "I")) == RAW
    assert parse_code(CODE.replace("1", "l")) == RAW


def test_new_codes_are_random_and_well_formed() -> None:
    codes = {new_recovery_code() for _ in range(50)}
    assert len(codes) == 50
    for code in codes:
        groups = code.split("-")
        assert len(groups) == 9 and all(len(g) == 4 for g in groups)
        assert len(parse_code(code)) == 20  # 160 bits


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        CODE[:-5],  # a group missing
        CODE + "-AAAA",  # a group too many
        CODE.replace("G", "U", 1),  # U is not in the alphabet
        CODE[:-1] + "Z",  # the check group mistyped
        CODE[:3] + "Z" + CODE[4:],  # a character of the code mistyped
        CODE[:5] + CODE[6] + CODE[5] + CODE[7:],  # two characters swapped
    ],
)
def test_malformed_codes_are_not_valid_recovery_codes(text: str) -> None:
    with pytest.raises(InvalidRecoveryCode, match="not a valid recovery code"):
        parse_code(text)


def test_the_key_is_argon2id_then_x25519_as_an_age_recipient() -> None:
    key = RecoveryKey.derive(CODE, SALT, FAST)
    assert key.recipient == RECIPIENT
    assert RecoveryKey.derive(CODE, SALT).recipient == RECIPIENT_DEFAULT_KDF
    # The same by hand: argon2id's first 32 bytes are the X25519 private key.
    secret = hash_secret_raw(RAW, SALT, time_cost=1, memory_cost=8192, parallelism=1,
                             hash_len=64, type=Type.ID)  # fmt: skip
    public = X25519PrivateKey.from_private_bytes(secret[:32]).public_key()
    hrp, words = bech32.bech32_decode(RECIPIENT)
    assert hrp == "age" and words is not None
    assert bytes(bech32.convertbits(words, 5, 8, False) or []) == public.public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )
    # Another salt, another key; the proof is not the private key.
    assert RecoveryKey.derive(CODE, b"\x01" * 16, FAST).recipient != RECIPIENT
    assert key.identity_text().startswith("AGE-SECRET-KEY-1")
    assert key.identity_text() not in repr(key) and key.proof not in key.identity_text()


def test_a_wrong_code_is_told_before_anything_is_decrypted() -> None:
    right = RecoveryKey.derive(CODE, SALT, FAST)
    right.check(RECIPIENT)
    other = RecoveryKey.derive(new_recovery_code(), SALT, FAST)
    with pytest.raises(WrongRecoveryCode, match="wrong recovery code"):
        other.check(RECIPIENT)


def test_wrapping_is_age_and_authenticated() -> None:
    key = RecoveryKey.derive(CODE, SALT, FAST)
    repo_key = os.urandom(32)
    wrapped = wrap_key(repo_key, key.recipient)
    assert wrapped.startswith(b"age-encryption.org/v1\n") and repo_key not in wrapped
    assert key.unwrap(wrapped) == repo_key
    # The age format itself: pyrage opens it with the identity's text form.
    identity = pyrage.x25519.Identity.from_str(key.identity_text())
    assert pyrage.decrypt(wrapped, [identity]) == repo_key
    # Wrapped twice, two different files (fresh ephemeral key each time).
    assert wrap_key(repo_key, key.recipient) != wrapped
    for n in (30, len(wrapped) // 2, len(wrapped) - 1):
        tampered = bytearray(wrapped)
        tampered[n] ^= 0x01
        with pytest.raises(IntegrityError):
            key.unwrap(bytes(tampered))
    with pytest.raises(IntegrityError):
        key.unwrap(wrapped[:-1])
    other = RecoveryKey.derive(new_recovery_code(), SALT, FAST)
    with pytest.raises(IntegrityError, match="not wrapped for this recovery code"):
        other.unwrap(wrapped)
    with pytest.raises(ValueError):
        wrap_key(b"short", key.recipient)


@pytest.mark.parametrize(
    "text",
    [
        "argon2id$v=19$m=4096,t=3,p=4",  # too little memory to be argon2id worth having
        "argon2id$v=19$m=99999999,t=3,p=4",  # a server asking for ~100 GiB
        "argon2id$v=19$m=65536,t=0,p=4",
        "argon2id$v=19$m=65536,t=3,p=99",
        "scrypt$N=16384",
        "",
    ],
)
def test_the_kdf_a_server_names_is_bounded(text: str) -> None:
    with pytest.raises(IntegrityError):
        KdfParams.parse(text)


def test_the_kdf_text_reads_back() -> None:
    assert KdfParams.parse(KdfParams().text()) == KdfParams()
    assert KdfParams().text() == "argon2id$v=19$m=65536,t=3,p=4"


@dataclass
class FakePlane:
    info: RecoveryInfo
    puts: list[tuple[bytes, int]] = field(default_factory=list)
    fail: bool = False

    def recovery_state(self) -> RecoveryInfo:
        if self.fail:
            raise ConnectionError("the server went away")
        return self.info

    def repo_key_put(self, wrapped: bytes, version: int) -> None:
        self.puts.append((wrapped, version))


def test_a_snapshot_uploads_its_wrapped_key_only_when_needed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    repo_key = os.urandom(32)
    off = FakePlane(RecoveryInfo(configured=False))
    for _ in range(3):
        keep_wrapped(off, repo_key, server="https://unit.test")  # type: ignore[arg-type]
    assert off.puts == []
    said = [r.getMessage() for r in caplog.records if "Recovery is not set up" in r.getMessage()]
    assert len(said) == 1 and "backapp-agent recovery init" in said[0]

    key = RecoveryKey.derive(CODE, SALT, FAST)
    on = FakePlane(RecoveryInfo(configured=True, public_key=key.recipient, version=3))
    keep_wrapped(on, repo_key)  # type: ignore[arg-type]
    [(wrapped, version)] = on.puts
    assert version == 3 and key.unwrap(wrapped) == repo_key
    current = FakePlane(
        RecoveryInfo(configured=True, public_key=key.recipient, version=3, agent_key_version=3)
    )
    keep_wrapped(current, repo_key)  # type: ignore[arg-type]
    assert current.puts == []
    stale = FakePlane(
        RecoveryInfo(configured=True, public_key=key.recipient, version=3, agent_key_version=2)
    )
    keep_wrapped(stale, repo_key)  # type: ignore[arg-type]
    assert [v for _, v in stale.puts] == [3]
    # A failure never reaches the snapshot.
    keep_wrapped(FakePlane(RecoveryInfo(configured=False), fail=True), repo_key)  # type: ignore[arg-type]
    assert any("could not store the wrapped" in r.getMessage() for r in caplog.records)
    assert all(repo_key.hex() not in r.getMessage() for r in caplog.records)
