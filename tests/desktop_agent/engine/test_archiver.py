"""The archive round trip: build awkward trees, archive them, extract with the SYSTEM tar, compare."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from desktop_agent.engine import Archiver, ScanEntry, write_archive
from desktop_agent.engine._compress import OrderedPipe, make_compressor
from tests.support.trees import MIB, build_awkward_tree, extracted_root, snapshot

pytestmark = pytest.mark.skipif(shutil.which("tar") is None, reason="needs the system tar")


def archive_bytes(sources: list[Path], fmt: str = "gzip", **kw: object):  # type: ignore[no-untyped-def]
    out: list[bytes] = []
    stats = write_archive(out.append, [str(s) for s in sources], fmt=fmt, **kw)  # type: ignore[arg-type]
    return b"".join(out), stats


def system_extract(
    data: bytes, dest: Path, fmt: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    archive = tmp_path / {"gzip": "a.tar.gz", "zstd": "a.tar.zst", "none": "a.tar"}[fmt]
    archive.write_bytes(data)
    dest.mkdir()
    flags = {"gzip": ["-xzf"], "zstd": ["--zstd", "-xf"], "none": ["-xf"]}[fmt]
    return subprocess.run(
        ["tar", *flags, str(archive), "-C", str(dest)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("fmt", ["gzip", "zstd", "none"])
def test_round_trip_with_system_tar(tmp_path: Path, fmt: str) -> None:
    if fmt == "zstd" and shutil.which("zstd") is None:
        pytest.skip("needs the zstd binary")
    src = build_awkward_tree(tmp_path / "src")
    data, stats = archive_bytes([src], fmt)
    assert stats.errors == []
    proc = system_extract(data, tmp_path / "out", fmt, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(extracted_root(tmp_path / "out", src)) == snapshot(src)


def test_gzip_stream_is_plain_gzip(tmp_path: Path) -> None:
    src = build_awkward_tree(tmp_path / "src", big=5 * MIB)
    data, _ = archive_bytes([src], "gzip", threads=2)
    (tmp_path / "a.tar.gz").write_bytes(data)
    assert subprocess.run(["gzip", "-t", str(tmp_path / "a.tar.gz")], check=False).returncode == 0
    raw = gzip.decompress(data)
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert any(n.endswith("/big.bin") for n in names)
    # pigz-style: ONE gzip member, not many (the trailer is the only one)
    assert data.count(b"\x1f\x8b\x08") >= 1 and data[:3] == b"\x1f\x8b\x08"
    d = __import__("zlib").decompressobj(31)
    d.decompress(data)
    assert d.eof and d.unused_data == b""


def test_zstd_stream_has_a_checksum(tmp_path: Path) -> None:
    src = build_awkward_tree(tmp_path / "src")
    data, _ = archive_bytes([src], "zstd")
    assert zstandard.get_frame_parameters(data).has_checksum
    (tmp_path / "a.tar.zst").write_bytes(data)
    assert subprocess.run(["zstd", "-tq", str(tmp_path / "a.tar.zst")], check=False).returncode == 0


def test_python_tarfile_reads_the_same_names(tmp_path: Path) -> None:
    src = build_awkward_tree(tmp_path / "src")
    data, _ = archive_bytes([src], "none")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    base = str(src).lstrip("/")
    assert members[f"{base}/new\nline.txt"].size == len(b"a newline in the name")
    assert (
        members[f"{base}/link-to-dir"].issym()
        and members[f"{base}/link-to-dir"].linkname == "sub dir"
    )
    assert members[f"{base}/hardlink-to-plain"].islnk() or members[f"{base}/plain.txt"].islnk()
    assert members[f"{base}/empty dir"].isdir()
    assert members[f"{base}/private.txt"].mode == 0o600
    assert len(data) % 10240 == 0


def test_several_sources_keep_their_full_paths(tmp_path: Path) -> None:
    a, b = tmp_path / "one" / "docs", tmp_path / "two" / "docs"
    for d, text in ((a, b"A"), (b, b"B")):
        d.mkdir(parents=True)
        (d / "same.txt").write_bytes(text)
    data, _ = archive_bytes([a, b, a / "."], "gzip")  # the duplicate is dropped
    proc = system_extract(data, tmp_path / "out", "gzip", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (extracted_root(tmp_path / "out", a) / "same.txt").read_bytes() == b"A"
    assert (extracted_root(tmp_path / "out", b) / "same.txt").read_bytes() == b"B"


def test_a_source_file_not_a_folder(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes(b"just one file")
    data, stats = archive_bytes([f], "gzip")
    assert stats.files == 1
    proc = system_extract(data, tmp_path / "out", "gzip", tmp_path)
    assert proc.returncode == 0
    assert extracted_root(tmp_path / "out", f).read_bytes() == b"just one file"


# -- files that change under the archiver -----------------------------------------------------------


def _archive_entries(entries: list[ScanEntry], archiver_kw: dict[str, object], hook=None):  # type: ignore[no-untyped-def]
    out: list[bytes] = []
    pipe = OrderedPipe(out.append, 8)
    compressor = make_compressor("gzip", pipe, threads=2)

    def write(data: bytes) -> None:
        if hook is not None:
            hook(data)
        compressor.write(data)

    archiver = Archiver(write, **archiver_kw)  # type: ignore[arg-type]
    for entry in entries:
        archiver.add(entry)
    archiver.finish()
    compressor.close()
    pipe.close()
    return b"".join(out), archiver.stats


def _entry(path: Path) -> ScanEntry:
    st = path.stat()
    return ScanEntry("f", str(path), st.st_size, st.st_mtime_ns)


def test_file_deleted_or_truncated_between_scan_and_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("gone.txt", "shrunk.txt", "kept.txt"):
        (src / name).write_bytes(name.encode() * 1000)
    entries = [ScanEntry("d", str(src))] + [
        _entry(src / n) for n in ("gone.txt", "shrunk.txt", "kept.txt")
    ]
    (src / "gone.txt").unlink()
    (src / "shrunk.txt").write_bytes(b"short now")
    data, stats = _archive_entries(entries, {})
    messages = {Path(e.path).name: e.message for e in stats.errors}
    assert "vanished" in messages["gone.txt"]
    assert "changed since the scan" in messages["shrunk.txt"]
    assert "kept.txt" not in messages
    proc = system_extract(data, tmp_path / "out", "gzip", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = extracted_root(tmp_path / "out", src)
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt", "shrunk.txt"]
    assert (out / "shrunk.txt").read_bytes() == b"short now"


def test_file_that_shrinks_while_streamed_is_zero_padded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "growing-log.bin"
    victim.write_bytes(b"A" * (3 * MIB))
    (src / "after.txt").write_bytes(b"the archive goes on")
    entries = [ScanEntry("d", str(src)), _entry(victim), _entry(src / "after.txt")]
    seen = {"chunks": 0}

    def truncate_after_first_chunk(data: bytes) -> None:
        if data[:1] == b"A":
            seen["chunks"] += 1
            if seen["chunks"] == 1:
                with open(victim, "r+b") as fh:
                    fh.truncate(MIB + 5)

    data, stats = _archive_entries(
        entries, {"small_file": 0, "chunk_size": MIB}, truncate_after_first_chunk
    )
    [problem] = stats.errors
    assert problem.path == str(victim) and "shrank while being read" in problem.message
    proc = system_extract(data, tmp_path / "out", "gzip", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = extracted_root(tmp_path / "out", src)
    content = (out / victim.name).read_bytes()
    assert len(content) == 3 * MIB  # the header's size, kept consistent
    assert content[: MIB + 5] == b"A" * (MIB + 5) and content[2 * MIB :] == bytes(MIB)
    assert (out / "after.txt").read_bytes() == b"the archive goes on"


def test_small_file_that_grows_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "small.txt"
    victim.write_bytes(b"1234")
    entry = _entry(victim)
    real_read = os.read

    def read_then_grow(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        with open(victim, "ab") as fh:  # someone appends while we read
            fh.write(b"more")
        return data

    monkeypatch.setattr(os, "read", read_then_grow)
    data, stats = _archive_entries([entry], {})
    monkeypatch.undo()
    assert [e.message for e in stats.errors] == [
        "grew while being read; archived its first 4 bytes"
    ]
    member = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))).getmembers()[0]
    assert member.size == 4


def test_unreadable_file_is_a_per_file_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_bytes(b"x")
    (src / "fine.txt").write_bytes(b"y")
    real_open = os.open

    def deny(path, flags, *args):  # type: ignore[no-untyped-def]
        if str(path).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    data, stats = _archive_entries([_entry(src / "secret.txt"), _entry(src / "fine.txt")], {})
    monkeypatch.undo()
    assert [(Path(e.path).name, e.message) for e in stats.errors] == [
        ("secret.txt", "cannot read: Permission denied")
    ]
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))).getnames()
    assert [Path(n).name for n in names] == ["fine.txt"]


def test_file_replaced_by_symlink_after_the_scan_is_archived_as_link(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "was-a-file"
    f.write_bytes(b"data")
    entry = _entry(f)
    f.unlink()
    os.symlink("/etc/passwd", f)
    data, _ = _archive_entries([entry], {})
    member = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))).getmembers()[0]
    assert member.issym() and member.linkname == "/etc/passwd"


def test_fifo_is_skipped_and_never_blocks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    (src / "ok.txt").write_bytes(b"ok")
    data, stats = archive_bytes([src], "gzip")
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))).getnames()
    assert not any(n.endswith("/pipe") for n in names) and any(n.endswith("/ok.txt") for n in names)
