"""The streamed ``age`` stages of encrypted full archives: what the encryptor writes is a standard
age file (pyrage opens it), it streams in bounded pieces, and the decrypting reader tells a
wrong key or a cut-short file instead of producing garbage."""

from __future__ import annotations

import io
import os

import pyrage
import pytest

from desktop_agent.engine._age import (
    AgeDecryptingReader,
    AgeEncryptor,
    agent_identity,
    agent_recipient,
)
from desktop_agent.engine._errors import IntegrityError

KEY = bytes(range(32))


def _encrypt(data: bytes, recipients: list[str], piece: int = 100_000) -> tuple[bytes, int]:
    out = io.BytesIO()
    largest = 0

    def sink(chunk: bytes) -> None:
        nonlocal largest
        largest = max(largest, len(chunk))
        out.write(chunk)

    enc = AgeEncryptor(sink, recipients)
    for i in range(0, len(data), piece):
        enc.write(data[i : i + piece])
    enc.close()
    return out.getvalue(), largest


def test_the_agent_identity_is_fixed_by_the_repository_key() -> None:
    assert str(agent_identity(KEY)) == str(agent_identity(bytes(KEY)))
    assert agent_recipient(KEY).startswith("age1")
    assert agent_recipient(KEY) != agent_recipient(bytes(31) + b"\x01")


def test_an_encrypted_stream_is_an_age_file_for_every_recipient() -> None:
    other = pyrage.x25519.Identity.generate()
    data = os.urandom(3_000_000)
    sealed, largest = _encrypt(data, [agent_recipient(KEY), str(other.to_public())])
    assert sealed.startswith(b"age-encryption.org/v1\n") and data[:64] not in sealed
    assert largest <= 65536 + 16  # handed on chunk by chunk, never the whole archive
    assert pyrage.decrypt(sealed, [agent_identity(KEY)]) == data
    assert pyrage.decrypt(sealed, [other]) == data
    reader = AgeDecryptingReader(io.BytesIO(sealed), [other])
    assert io.BufferedReader(reader).read() == data


def test_a_wrong_key_and_a_cut_short_file_are_errors_not_garbage() -> None:
    sealed, _ = _encrypt(b"x" * 200_000, [agent_recipient(KEY)])
    stranger = pyrage.x25519.Identity.generate()
    with pytest.raises(IntegrityError, match="not for any key given"):
        AgeDecryptingReader(io.BytesIO(sealed), [stranger]).read()
    cut = AgeDecryptingReader(io.BytesIO(sealed[:-20]), [agent_identity(KEY)])
    with pytest.raises(IntegrityError, match="damaged or cut short"):
        while cut.read(65536):
            pass


def test_a_failing_sink_stops_the_encryption_with_its_own_error() -> None:
    def sink(chunk: bytes) -> None:
        raise OSError("the upload failed")

    enc = AgeEncryptor(sink, [agent_recipient(KEY)])
    with pytest.raises(OSError, match="the upload failed"):
        for _ in range(100):
            enc.write(b"y" * 100_000)
        enc.close()
    enc.abort()


def test_a_failing_source_comes_back_as_raised() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
            raise ConnectionError("the download stopped")

    reader = AgeDecryptingReader(Broken(), [agent_identity(KEY)])
    with pytest.raises(ConnectionError, match="the download stopped"):
        reader.read()
