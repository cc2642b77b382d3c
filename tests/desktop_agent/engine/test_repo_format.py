"""The snapshot repository format (docs/repository-format.md), checked against fixed vectors.

``testdata/repo-v1.json`` was written once by the format code and is never regenerated: if a
change to the code makes these tests fail, the change broke every existing repository.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path

import msgspec
import pytest

from desktop_agent.engine._repo import format as f
from desktop_agent.engine._repo import pack as pack_module
from desktop_agent.engine._repo.crypto import NONCE_BYTES, RepoKeys
from desktop_agent.engine._repo.errors import CorruptObject
from desktop_agent.engine._repo.pack import PackEntry, PackWriter, header_length, read_pack_header
from desktop_agent.engine.repo_protocol import decode_bitmap, encode_bitmap

VECTORS = json.loads((Path(__file__).parent / "testdata" / "repo-v1.json").read_text())
KEY = bytes.fromhex(VECTORS["key"])


def keys(nonces: list[bytes] | None = None) -> RepoKeys:
    source = iter(nonces) if nonces is not None else None
    return RepoKeys.derive(KEY, nonce=(lambda n: next(source)) if source else (lambda n: b"\0" * n))


def counter_keys(start: int = 0) -> RepoKeys:
    c = itertools.count(start)
    return RepoKeys.derive(KEY, nonce=lambda n: next(c).to_bytes(n, "big"))


def test_derived_keys_are_fixed() -> None:
    k = keys()
    assert k.enc_key != k.id_key and len(k.enc_key) == len(k.id_key) == 32
    assert k.chunker_seed < 2**63
    # Ids are keyed: the same bytes have another id under another key.
    other = RepoKeys.derive(bytes(32))
    assert k.blob_id(b"x") != other.blob_id(b"x")
    assert k.blob_id(b"x") == RepoKeys.derive(KEY).blob_id(b"x")


@pytest.mark.parametrize("name", ["blob_text", "blob_tiny"])
def test_data_blob_vector(name: str) -> None:
    v = VECTORS[name]
    stored = bytes.fromhex(v["stored"])
    plain = bytes.fromhex(v["plaintext"])
    blob_id = bytes.fromhex(v["id"])
    k = keys()
    assert k.blob_id(plain) == blob_id
    got = f.open_blob(k, 0, blob_id, v["compressed"], len(plain), stored, what="vector")
    assert got == plain
    # Re-sealing the decrypted body with the recorded nonce gives the stored bytes exactly.
    aad = f.blob_aad(0, v["compressed"], blob_id)
    body = keys().open(aad, stored, what="vector")
    assert keys([stored[:NONCE_BYTES]]).seal(aad, body) == stored
    if not v["compressed"]:
        resealed = f.seal_blob(keys([stored[:NONCE_BYTES]]), f.BlobType.DATA, plain)
        assert resealed.data == stored


def test_tree_vector_decodes_and_reencodes_exactly() -> None:
    v = VECTORS["tree"]
    plain = bytes.fromhex(v["plaintext"])
    tree = f.decode_tree(plain, what="vector")
    assert [n.name for n in tree.nodes] == [b"a.txt", "café".encode(), b"link"]
    a, cafe, link = tree.nodes
    assert (a.type, a.mode, a.size, a.inode, a.uid) == ("file", 0o644, 1054, 42, 1000)
    assert a.content == [
        bytes.fromhex(VECTORS["blob_text"]["id"]),
        bytes.fromhex(VECTORS["blob_tiny"]["id"]),
    ]
    assert (cafe.type, cafe.subtree, cafe.content) == ("dir", bytes(32), [])
    assert (link.type, link.target) == ("symlink", b"a.txt")
    assert f.encode_tree(tree.nodes) == plain
    # Absent keys are defaults: the document is a plain map, readable by any MessagePack reader.
    raw = msgspec.msgpack.decode(plain)
    assert (
        raw["v"] == 1 and "ctime" not in raw["nodes"][1] and raw["nodes"][2]["target"] == b"a.txt"
    )
    stored = bytes.fromhex(v["stored"])
    assert (
        f.open_blob(keys(), 1, bytes.fromhex(v["id"]), False, len(plain), stored, what="t") == plain
    )
    assert f.seal_blob(keys([stored[:NONCE_BYTES]]), f.BlobType.TREE, plain).data == stored


def test_pack_vector() -> None:
    v = VECTORS["pack"]
    data = bytes.fromhex(v["bytes"])
    assert hashlib.sha256(data).hexdigest() == v["name"]
    assert data[:8] == b"BKPK\x01\x00\x00\x00"
    entries = read_pack_header(keys(), data)
    assert [
        [e.type, e.id.hex(), e.offset, e.length, e.raw_length, e.compressed] for e in entries
    ] == v["entries"]
    # The tail alone is enough to read the header.
    tail = header_length(data) + 4
    assert read_pack_header(keys(), data[-tail:], pack_size=len(data)) == entries
    with pytest.raises(CorruptObject):
        read_pack_header(keys(), data[-tail + 1 :], pack_size=len(data))
    blobs = {
        e.id: f.open_blob(
            keys(),
            e.type,
            e.id,
            e.compressed,
            e.raw_length,
            data[e.offset : e.offset + e.length],
            what="p",
        )
        for e in entries
    }
    assert blobs[bytes.fromhex(VECTORS["blob_tiny"]["id"])] == b"tiny"
    # Writing the same blobs again with the same nonces gives the same pack.
    stored = [data[e.offset : e.offset + e.length] for e in entries]
    w = PackWriter(counter_keys(len(entries)))
    for e, s in zip(entries, stored, strict=True):
        w.add(f.SealedBlob(e.type, e.id, s, e.raw_length, e.compressed))
    again = w.finish()
    assert again.entries == entries
    assert (
        again.joined()[: entries[-1].offset + entries[-1].length]
        == data[: entries[-1].offset + entries[-1].length]
    )
    assert len(again.joined()) == len(data)


def test_snapshot_vector() -> None:
    data = bytes.fromhex(VECTORS["snapshot"]["bytes"])
    assert data[:8] == b"BKSN\x01\x00\x00\x00"
    doc = f.decode_object(keys(), f.MAGIC_SNAPSHOT, data, what="vector")
    assert (doc.backupId, doc.configName, doc.sources, doc.parent) == (
        "00000000-0000-4000-8000-000000000001",
        "Docs",
        ["/home/me/Docs"],
        None,
    )
    assert doc.tree == bytes.fromhex(VECTORS["tree"]["id"])
    assert doc.summary.newBlobs == 3
    body = f.open_object_body(keys(), f.MAGIC_SNAPSHOT, data, what="vector")
    assert data[:8] + keys([data[8 : 8 + NONCE_BYTES]]).seal(data[:8], body) == data
    with pytest.raises(CorruptObject, match="not a BackApp index"):
        f.decode_object(keys(), f.MAGIC_INDEX, data, what="it")


def test_wrong_key_and_tampering_are_refused() -> None:
    data = bytes.fromhex(VECTORS["snapshot"]["bytes"])
    with pytest.raises(CorruptObject, match="another key"):
        f.decode_object(RepoKeys.derive(bytes(32)), f.MAGIC_SNAPSHOT, data, what="snap")
    newer = data[:4] + b"\x02" + data[5:]
    with pytest.raises(CorruptObject, match="format version 2"):
        f.decode_object(keys(), f.MAGIC_SNAPSHOT, newer, what="snap")
    v = VECTORS["blob_tiny"]
    stored = bytearray(bytes.fromhex(v["stored"]))
    blob_id = bytes.fromhex(v["id"])
    # A blob moved under another id, or marked as compressed, does not open.
    with pytest.raises(CorruptObject):
        f.open_blob(keys(), 0, bytes(32), False, 4, bytes(stored), what="b")
    with pytest.raises(CorruptObject):
        f.open_blob(keys(), 0, blob_id, True, 4, bytes(stored), what="b")
    stored[-1] ^= 1
    with pytest.raises(CorruptObject):
        f.open_blob(keys(), 0, blob_id, False, 4, bytes(stored), what="b")


def test_mutated_packs_fail_cleanly() -> None:
    """Fuzz: no mutation of a pack makes the reader crash or return wrong data."""
    data = bytes.fromhex(VECTORS["pack"]["bytes"])
    good = {
        e.id: f.open_blob(
            keys(),
            e.type,
            e.id,
            e.compressed,
            e.raw_length,
            data[e.offset : e.offset + e.length],
            what="p",
        )
        for e in read_pack_header(keys(), data)
    }
    rng = random.Random(1234)
    for _ in range(400):
        mutated = bytearray(data)
        choice = rng.randrange(4)
        if choice == 0:
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        elif choice == 1:
            mutated = mutated[: rng.randrange(len(mutated))]
        elif choice == 2:
            mutated[-4:] = rng.randrange(2**32).to_bytes(4, "little")
        else:
            cut = rng.randrange(8, len(mutated))
            mutated = mutated[:cut] + bytes(rng.randrange(1, 64)) + mutated[cut:]
        try:
            entries = read_pack_header(keys(), bytes(mutated))
        except CorruptObject:
            continue
        for e in entries:
            try:
                plain = f.open_blob(
                    keys(),
                    e.type,
                    e.id,
                    e.compressed,
                    e.raw_length,
                    bytes(mutated[e.offset : e.offset + e.length]),
                    what="p",
                )
            except CorruptObject:
                continue
            assert good[e.id] == plain


def test_pack_entries_outside_the_pack_are_refused() -> None:
    k = counter_keys()
    w = PackWriter(k)
    blob = f.seal_blob(k, f.BlobType.DATA, b"x" * 100)
    w.add(blob)
    pack = w.finish()
    assert read_pack_header(k, pack.joined()) == [
        PackEntry(0, blob.id, 8, len(blob.data), 100, False)
    ]
    with pytest.raises(CorruptObject, match="not a BackApp pack"):
        read_pack_header(k, b"XXXX" + pack.joined()[4:])


def test_tiny_blobs_share_pieces_and_large_ones_are_not_copied() -> None:
    k = counter_keys()
    w = PackWriter(k)
    tiny = [f.seal_blob(k, f.BlobType.DATA, b"%d" % i) for i in range(20_000)]
    large = f.seal_blob(k, f.BlobType.DATA, random.Random(1).randbytes(200_000))
    for blob in tiny[:10_000]:
        w.add(blob)
    w.add(large)
    for blob in tiny[10_000:]:
        w.add(blob)
    pack = w.finish()
    # 20,000 tiny blobs (~1.1 MB) travel as a handful of segments, the large one as itself.
    assert len(pack.parts) < 10
    assert any(part is large.data for part in pack.parts)
    data = pack.joined()
    assert pack.size == len(data)
    assert pack.name == hashlib.sha256(data).hexdigest()
    entries = read_pack_header(k, data)
    assert entries == pack.entries
    for blob, e in zip([*tiny[:10_000], large, *tiny[10_000:]], entries, strict=True):
        assert data[e.offset : e.offset + e.length] == blob.data


def test_a_pack_is_full_at_its_blob_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pack_module, "MAX_PACK_BLOBS", 3)
    k = counter_keys()
    w = PackWriter(k)
    for i in range(3):
        assert not w.full
        w.add(f.seal_blob(k, f.BlobType.DATA, b"%d" % i))
    assert w.full


def test_pack_bitmaps() -> None:
    assert decode_bitmap(encode_bitmap([])) == set()
    seqs = {0, 1, 7, 8, 9, 1000, 123_456}
    text = encode_bitmap(seqs)
    assert decode_bitmap(text) == seqs
    # Dense sets stay small: a million packs in a few hundred bytes.
    assert len(encode_bitmap(range(1_000_000))) < 1000
    with pytest.raises(ValueError, match="beyond"):
        decode_bitmap(text, limit=1000)
    for bad in ("***", "aGVsbG8=", ""):
        if bad == "":
            assert decode_bitmap(bad) == set()
            continue
        with pytest.raises(ValueError, match="not a pack bitmap"):
            decode_bitmap(bad)
