"""The compressors' fast paths: stored runs inside the parallel gzip stream, zstd as a sequence of
frames, the flat-histogram test, and the archiver's header template. Every output is checked by
decompressing it (zlib, the zstd library, and the system's gzip/zstd/tar on whole archives)."""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard

import desktop_agent.engine._compress as compress
from desktop_agent.engine import write_archive
from desktop_agent.engine._compress import (
    MIN_STORED,
    GzipCompressor,
    OrderedPipe,
    Span,
    ZstdCompressor,
    deflate_block,
    looks_flat,
    stored_blocks,
)
from desktop_agent.engine._tar import REGTYPE, Archiver
from tests.support.trees import extracted_root, snapshot

KIB = 1024
MIB = 1024 * KIB


def _text(rng: random.Random, size: int) -> bytes:
    words = [b"backup", b"archive", b"agent", b"restore", b"schedule", b"lease", b"the", b"of"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def inflate_raw(data: bytes) -> bytes:
    """A raw deflate stream made of sync-flushed pieces, closed with a final empty block."""
    d = zlib.decompressobj(-15)
    out = d.decompress(data + b"\x03\x00")
    assert d.eof and d.unused_data == b""
    return out


# -- the flat-histogram test ------------------------------------------------------------------------


def test_looks_flat_on_content_deflate_cannot_shrink() -> None:
    rng = random.Random(1)
    text = _text(rng, 64 * KIB)
    assert looks_flat(os.urandom(8 * KIB))
    assert looks_flat(zlib.compress(rng.randbytes(16 * KIB) + text, 9))
    assert looks_flat(zstandard.ZstdCompressor(level=19).compress(text * 4 + os.urandom(16 * KIB)))


def test_looks_flat_refuses_what_compresses() -> None:
    rng = random.Random(2)
    assert not looks_flat(_text(rng, 16 * KIB))
    assert not looks_flat(bytes(16 * KIB))
    assert not looks_flat(_text(rng, 16 * KIB).decode().encode("utf-16-le"))
    assert not looks_flat("пример текста на кириллице ".encode() * 1000)
    assert not looks_flat(b"".join(struct.pack("<qd", i, i / 7) for i in range(2000)))
    # too short to judge
    assert not looks_flat(os.urandom(1000))


# -- stored blocks and deflate with spans -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_000])
def test_stored_blocks_inflate_to_their_content(size: int) -> None:
    data = os.urandom(size)
    out = stored_blocks(data)
    assert len(out) == size + 5 * -(-size // 0xFFFF)
    assert inflate_raw(out) == data


def test_flat_spans_are_stored_and_never_reach_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    photo_a, photo_b = os.urandom(20 * KIB), os.urandom(MIN_STORED)
    small_random = os.urandom(MIN_STORED - 1)  # too short to be worth storing
    text = _text(rng, 30 * KIB)
    pieces = [b"header 1", photo_a, text, photo_b, b"tail", small_random, text]
    block = b"".join(pieces)
    spans: list[Span] = []
    pos = 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    fed: list[int] = []
    real = compress._deflater

    class Recording:
        def __init__(self, c: Any) -> None:
            self.c = c

        def compress(self, data: Any) -> bytes:
            fed.append(len(data))
            out: bytes = self.c.compress(data)
            return out

        def flush(self, mode: int) -> bytes:
            out: bytes = self.c.flush(mode)
            return out

    monkeypatch.setattr(compress, "_deflater", lambda level, zdict: Recording(real(level, zdict)))
    zdict = _text(rng, 32 * KIB)
    out = deflate_block(block, zdict, 6, True, spans)
    monkeypatch.undo()
    # the two flat contents went out as stored blocks, verbatim; everything else was deflated
    assert sum(fed) == len(block) - len(photo_a) - len(photo_b)
    assert struct.pack("<BHH", 0, len(photo_a), len(photo_a) ^ 0xFFFF) + photo_a in out
    assert struct.pack("<BHH", 0, len(photo_b), len(photo_b) ^ 0xFFFF) + photo_b in out
    d = zlib.decompressobj(-15, zdict=zdict)
    assert d.decompress(out + b"\x03\x00") == block and d.eof
    # without the spans, or not adaptive: one deflate of everything
    for kwargs in ({"adaptive": True, "spans": ()}, {"adaptive": False, "spans": spans}):
        plain = deflate_block(block, zdict, 6, **kwargs)  # type: ignore[arg-type]
        d = zlib.decompressobj(-15, zdict=zdict)
        assert d.decompress(plain + b"\x03\x00") == block


def test_an_incompressible_block_without_spans_is_stored_whole() -> None:
    block = os.urandom(256 * KIB)
    out = deflate_block(block, b"z" * 32 * KIB, 6)
    assert out == stored_blocks(block)


# -- the compressors ---------------------------------------------------------------------------------


class _Recorder(GzipCompressor):
    """A gzip compressor that also keeps what each block was given."""

    def __init__(self, pipe: OrderedPipe, **kw: Any) -> None:
        super().__init__(pipe, **kw)
        self.blocks: list[tuple[bytes, list[Span]]] = []

    def _block(self, block: bytes, spans: list[Span]) -> None:
        self.blocks.append((block, list(spans)))
        super()._block(block, spans)


def test_gzip_spans_follow_their_content_across_blocks() -> None:
    rng = random.Random(4)
    out: list[bytes] = []
    pipe = OrderedPipe(out.append, 4)
    gz = _Recorder(pipe, threads=2, block_size=16 * KIB)
    stream = bytearray()
    hinted: list[bytes] = []
    for i in range(40):
        header = b"H" * 512
        content = (
            os.urandom(rng.randint(1, 40 * KIB)) if i % 2 else _text(rng, rng.randint(1, 9000))
        )
        member = header + content + bytes(-len(content) % 512)
        gz.write_content(member, len(header), len(header) + len(content))
        if len(content) >= MIN_STORED:
            hinted.append(content)
        stream += member
        if i % 7 == 0:
            gz.write(b"\0" * 512)  # a plain write between members
            stream += b"\0" * 512
    gz.close()
    pipe.close()
    data = b"".join(out)
    assert gzip.decompress(data) == stream
    d = zlib.decompressobj(31)
    d.decompress(data)
    assert d.eof and d.unused_data == b""  # one gzip member
    assert all(len(b) == 16 * KIB for b, _ in gz.blocks[:-1])
    # each hinted content is exactly the concatenation of its pieces, in order, across blocks
    pieces = [block[s:e] for block, spans in gz.blocks for s, e in spans]
    assert b"".join(pieces) == b"".join(hinted)
    assert all(0 <= s < e <= len(block) for block, spans in gz.blocks for s, e in spans)
    # the random half was stored: the archive is barely smaller than it, the text half shrank
    random_bytes = sum(len(c) for c in hinted if looks_flat(c))
    assert len(data) > random_bytes


def test_zstd_writes_a_sequence_of_frames_every_reader_accepts(tmp_path: Path) -> None:
    rng = random.Random(5)
    stream = b"".join(_text(rng, 700 * KIB) + os.urandom(300 * KIB) for _ in range(10))
    out: list[bytes] = []
    pipe = OrderedPipe(out.append, 4)
    zc = ZstdCompressor(pipe, level=3, threads=2, block_size=2 * MIB)
    for start in range(0, len(stream), 300 * KIB):
        zc.write(stream[start : start + 300 * KIB])
    zc.close()
    pipe.close()
    data = b"".join(out)
    frames, rest = 0, data
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        d.decompress(rest)
        assert zstandard.get_frame_parameters(rest).has_checksum
        rest = d.unused_data
        frames += 1
    assert frames == -(-len(stream) // (2 * MIB))
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    assert reader.read() == stream
    if shutil.which("zstd"):
        (tmp_path / "s.zst").write_bytes(data)
        proc = subprocess.run(["zstd", "-dc", str(tmp_path / "s.zst")], capture_output=True)
        assert proc.returncode == 0 and proc.stdout == stream


def test_an_empty_zstd_stream_is_one_empty_frame() -> None:
    out: list[bytes] = []
    pipe = OrderedPipe(out.append, 2)
    zc = ZstdCompressor(pipe, threads=1)
    zc.close()
    pipe.close()
    assert zstandard.ZstdDecompressor().decompress(b"".join(out)) == b""


# -- whole archives: photos among text files ----------------------------------------------------------


def _mixed_tree(root: Path) -> Path:
    rng = random.Random(6)
    for i in range(120):
        folder = root / f"d{i // 30}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.choice([0, 100, 3000, 5000, 70_000, 300_000])
        content = os.urandom(size) if i % 2 else _text(rng, size)
        (folder / f"f{i:03d}.{'jpg' if i % 2 else 'txt'}").write_bytes(content)
    return root


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the system tar")
@pytest.mark.parametrize("fmt", ["gzip", "zstd"])
def test_mixed_tree_round_trips_through_system_tar(tmp_path: Path, fmt: str) -> None:
    if fmt == "zstd" and shutil.which("zstd") is None:
        pytest.skip("needs the zstd binary")
    src = _mixed_tree(tmp_path / "src")
    plain: list[bytes] = []
    packed: list[bytes] = []
    write_archive(plain.append, [str(src)], fmt="none")
    stats = write_archive(packed.append, [str(src)], fmt=fmt, threads=2)  # type: ignore[arg-type]
    assert stats.errors == []
    data = b"".join(packed)
    raw = (
        gzip.decompress(data)
        if fmt == "gzip"
        else zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    )
    assert raw == b"".join(plain)  # the same tar stream, byte for byte
    archive = tmp_path / f"a.tar.{'gz' if fmt == 'gzip' else 'zst'}"
    archive.write_bytes(data)
    (tmp_path / "out").mkdir()
    flags = ["-xzf"] if fmt == "gzip" else ["--zstd", "-xf"]
    proc = subprocess.run(
        ["tar", *flags, str(archive), "-C", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert snapshot(extracted_root(tmp_path / "out", src)) == snapshot(src)


# -- the archiver's header template ----------------------------------------------------------------


class _Stat:
    def __init__(self, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
        self.st_mode, self.st_uid, self.st_gid, self.st_mtime_ns = mode, uid, gid, mtime_ns


@pytest.mark.parametrize("name", [b"a", b"x" * 100, b"x" * 101, "\u00e9t\u00e9".encode(), b"d/f"])
def test_header_template_matches_the_general_builder(name: bytes) -> None:
    archiver = Archiver(lambda data: None)
    for size in (0, 1, 12345, 8 * 1024**3):
        for mtime in (0, 1_700_000_000 * 10**9, -5 * 10**9, 2**40 * 10**9):
            for uid, gid in ((0, 0), (1000, 1000), (2**22, 5)):
                for mode in (0o100644, 0o100755, 0o104755):
                    st: Any = _Stat(mode, uid, gid, mtime)
                    fast = archiver._file_header(name, st, size)
                    assert fast == archiver._header(name, REGTYPE, st, size=size)
    member = tarfile.open(fileobj=io.BytesIO(fast + bytes(1024))).next()  # type: ignore[union-attr]
    assert member is not None and member.name == name.decode("utf-8", "surrogateescape")
