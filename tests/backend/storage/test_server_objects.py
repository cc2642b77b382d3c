"""The objects the server writes and reads itself (catalog copies, the metadata beside backups),
on both backends alike: small objects and files in and out, never overwriting, a missing key said
as such, and listings whole or one level at a time."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from backend.storage import LocalStorage, NoSuchKey, ObjectExists, S3Storage, Storage
from tests.support.s3 import S3Endpoint, s3_storage

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "storage", "http://127.0.0.1:1", b"secret" * 8)
    endpoint: S3Endpoint = request.getfixturevalue("s3_server")
    made: S3Storage = s3_storage(endpoint, request.getfixturevalue("s3_bucket"))
    return made


async def test_small_objects_round_trip_and_are_never_overwritten(storage: Storage) -> None:
    info = await storage.put_bytes("server/catalog/a.json", b'{"a": 1}')
    assert info.size == 8 and info.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert await storage.get_bytes("server/catalog/a.json") == b'{"a": 1}'
    with pytest.raises(ObjectExists):
        await storage.put_bytes("server/catalog/a.json", b"other")
    assert await storage.get_bytes("server/catalog/a.json") == b'{"a": 1}'
    with pytest.raises(NoSuchKey):
        await storage.get_bytes("server/catalog/missing.json")


async def test_files_round_trip(storage: Storage, tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "source"
    source.write_bytes(body)
    info = await storage.put_file("server/catalog/big.catalog", source)
    assert info.size == len(body)
    head = await storage.head("server/catalog/big.catalog")
    assert head is not None and head.size == len(body)
    target = tmp_path / "target"
    target.write_bytes(b"replaced")
    assert await storage.get_file("server/catalog/big.catalog", target) == len(body)
    assert target.read_bytes() == body
    with pytest.raises(NoSuchKey):
        await storage.get_file("server/catalog/none.catalog", tmp_path / "none")


async def test_listings_whole_or_one_level(storage: Storage) -> None:
    keys = [
        "users/u1/agents/a1/configs/c1/b1.tar.gz",
        "users/u1/agents/a1/configs/c1/meta/b1.json",
        "users/u1/agents/a1/repo/data/ab/abcd",
        "users/u2/server/configs/c2/b2.tar",
        "server/catalog/x.catalog",
    ]
    for i, key in enumerate(keys):
        await storage.put_bytes(key, b"x" * (i + 1))
    whole = await storage.list_objects("users/u1/")
    assert [o.key for o in whole.objects] == sorted(keys[:3]) and whole.prefixes == []
    assert {o.key: o.size for o in whole.objects}[keys[2]] == 3
    assert all(o.modified is not None for o in whole.objects)
    top = await storage.list_objects("users/", delimiter="/")
    assert top.objects == [] and top.prefixes == ["users/u1/", "users/u2/"]
    config = await storage.list_objects("users/u1/agents/a1/configs/c1/", delimiter="/")
    assert [o.key for o in config.objects] == [keys[0]]
    assert config.prefixes == ["users/u1/agents/a1/configs/c1/meta/"]
    assert (await storage.list_objects("nothing/here/")).objects == []
