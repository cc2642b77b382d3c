"""The backend-independent parts: key validation, checksum forms, the public face."""

from __future__ import annotations

import hashlib

import pytest

import backend.storage
from backend.storage import (
    CompletedPart,
    InvalidParts,
    check_part_order,
    content_disposition,
    sha256_b64_to_hex,
    sha256_hex_to_b64,
    validate_key,
)


@pytest.mark.parametrize(
    "key",
    [
        "users/1/agents/2/configs/3/backup-2025-01-07-143022.tar.gz",
        "a",
        "dir/ü a+b%41 #?.tar",
        "a/..b/c..",
        "x" * 1024,
        "é" * 512,  # 1024 bytes of UTF-8
    ],
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "non-empty"),
        ("../x", r"'\.\.'"),
        ("a/../x", r"'\.\.'"),
        ("a/./x", r"'\.'"),
        (".", r"'\.'"),
        ("/abs", "relative"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a/\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        ("a\\b", "backslash"),
        ("x" * 1025, "1024 bytes"),
        ("é" * 513, "1024 bytes"),
        ("\ud800", "Unicode"),
    ],
)
def test_validate_key_refuses(key: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        validate_key(key)


def test_checksum_forms() -> None:
    digest = hashlib.sha256(b"hello world").hexdigest()
    b64 = "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
    assert sha256_hex_to_b64(digest) == b64
    assert sha256_hex_to_b64(digest.upper()) == b64
    assert sha256_b64_to_hex(b64) == digest
    assert sha256_b64_to_hex(b64 + "-3") is None
    assert sha256_b64_to_hex("AAAA") is None  # 3 bytes, not a digest
    with pytest.raises(ValueError):
        sha256_hex_to_b64("abc")


def test_content_disposition_exact() -> None:
    assert content_disposition("backup.tar.gz") == 'attachment; filename="backup.tar.gz"'
    assert content_disposition('sauvegarde "été".tar') == (
        'attachment; filename="sauvegarde __t__.tar"; '
        "filename*=UTF-8''sauvegarde%20%22%C3%A9t%C3%A9%22.tar"
    )
    for bad in ["", "a\r\nSet-Cookie: x=1"]:
        with pytest.raises(ValueError):
            content_disposition(bad)


def test_check_part_order() -> None:
    digest = "0" * 64
    check_part_order([CompletedPart(1, "e", digest), CompletedPart(3, "e", digest)])
    for parts, why in [
        ([], "no parts"),
        ([CompletedPart(0, "e", digest)], "outside"),
        ([CompletedPart(10_001, "e", digest)], "outside"),
        ([CompletedPart(2, "e", digest), CompletedPart(1, "e", digest)], "ascending"),
        ([CompletedPart(1, "e", digest), CompletedPart(1, "e", digest)], "ascending"),
        ([CompletedPart(1, "e", "nothex")], "hex"),
    ]:
        with pytest.raises(InvalidParts, match=why):
            check_part_order(parts)


def test_public_face_is_complete() -> None:
    exported = set(backend.storage.__all__)
    public = {
        name
        for name in dir(backend.storage)
        if not name.startswith("_")
        and name not in {"base", "local", "local_files", "local_routes", "local_signing", "s3"}
    }
    assert public == exported
    for name in exported:
        assert getattr(backend.storage, name) is not None
