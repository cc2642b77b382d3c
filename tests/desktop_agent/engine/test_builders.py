"""Pure builders, checked exactly."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta, timezone

import pytest

from desktop_agent.engine import (
    ArchiveProgress,
    BackupOptions,
    ConfigurationError,
    RetryPolicy,
    archive_filename,
    archive_format,
    choose_part_size,
    event_to_json,
    member_name,
    parse_retry_after,
    parse_size,
    redact_url,
    split_sizes,
    tar_header,
)
from desktop_agent.engine._parts import numbered_filename
from desktop_agent.engine._tar import pax_record

MIB = 1024 * 1024
GIB = 1024 * MIB


def test_archive_filename() -> None:
    when = datetime(2025, 1, 7, 14, 30, 22, tzinfo=UTC)
    assert archive_filename(when, "gzip") == "backup-2025-01-07-143022.tar.gz"
    assert archive_filename(when, "zstd") == "backup-2025-01-07-143022.tar.zst"
    assert archive_filename(when, "none") == "backup-2025-01-07-143022.tar"
    # always UTC, whatever the local zone
    paris = datetime(2025, 1, 7, 15, 30, 22, tzinfo=timezone(timedelta(hours=1)))
    assert archive_filename(paris, "gzip") == "backup-2025-01-07-143022.tar.gz"


def test_numbered_filename() -> None:
    assert (
        numbered_filename("backup-2025-01-07-143022.tar.gz", 2)
        == "backup-2025-01-07-143022-2.tar.gz"
    )
    assert (
        numbered_filename("backup-2025-01-07-143022.tar.zst", 3)
        == "backup-2025-01-07-143022-3.tar.zst"
    )
    assert numbered_filename("backup-2025-01-07-143022.tar", 4) == "backup-2025-01-07-143022-4.tar"


def test_archive_format() -> None:
    assert archive_format(BackupOptions()) == "gzip"
    assert archive_format(BackupOptions(compression_format="zstd")) == "zstd"
    assert archive_format(BackupOptions(compression=False, compression_format="zstd")) == "none"
    with pytest.raises(ConfigurationError, match="compressionFormat 'lz4'"):
        archive_format(BackupOptions(compression_format="lz4"))


@pytest.mark.parametrize(
    ("configured", "suggested", "estimate", "max_parts", "expected"),
    [
        (None, None, 10 * GIB, 10_000, 16 * MIB),
        (None, 8 * MIB, 10 * GIB, 10_000, 8 * MIB),
        (5 * MIB, 16 * MIB, 1 * GIB, 10_000, 5 * MIB),
        (None, None, 1000 * GIB, 10_000, 113 * MIB),  # 1000 GiB * 1.1 / 10000 -> 112.64 MiB
        (5 * MIB, None, 1000 * GIB, 100, 5 * GIB),  # capped at S3's 5 GiB part limit
    ],
)
def test_choose_part_size(
    configured: int | None, suggested: int | None, estimate: int, max_parts: int, expected: int
) -> None:
    got = choose_part_size(
        configured=configured, suggested=suggested, estimated_size=estimate, max_parts=max_parts
    )
    assert got == expected


def test_split_sizes() -> None:
    assert split_sizes(0, 5) == [0]
    assert split_sizes(10, 5) == [5, 5]
    assert split_sizes(11, 5) == [5, 5, 1]
    assert split_sizes(12 * MIB, 5 * MIB) == [5 * MIB, 5 * MIB, 2 * MIB]


def test_parse_size() -> None:
    assert [parse_size(s) for s in ("16MiB", "16M", "5 GiB", "1048576", "1k", "1.5K")] == [
        16 * MIB,
        16 * MIB,
        5 * GIB,
        MIB,
        1024,
        1536,
    ]
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_member_name() -> None:
    assert member_name("/home/me/Documents", is_dir=True) == b"home/me/Documents/"
    assert member_name("/home/me/a b.txt") == b"home/me/a b.txt"
    assert member_name("/") == b""
    assert member_name("/home/me/\u00e9") == "home/me/\u00e9".encode()


def test_pax_record() -> None:
    assert pax_record(b"path", b"a") == b"9 path=a\n"
    assert pax_record(b"path", b"x" * 90) == b"99 path=" + b"x" * 90 + b"\n"
    # the length field growing from 2 to 3 digits counts itself
    assert pax_record(b"path", b"x" * 91) == b"101 path=" + b"x" * 91 + b"\n"


def test_plain_header_is_byte_identical_to_pythons_ustar() -> None:
    info = tarfile.TarInfo("home/me/notes.txt")
    info.size, info.mtime, info.mode = 1234, 1_500_000_000, 0o640
    info.uid, info.gid, info.uname, info.gname = 1000, 100, "me", "users"
    expected = info.tobuf(tarfile.USTAR_FORMAT)
    got = tar_header(
        b"home/me/notes.txt",
        b"0",
        mode=0o100640,
        uid=1000,
        gid=100,
        size=1234,
        mtime=1_500_000_000,
        uname="me",
        gname="users",
    )
    assert got == expected


def _parse(header: bytes) -> tarfile.TarInfo:
    return tarfile.open(fileobj=io.BytesIO(header + bytes(1024))).next()  # type: ignore[return-value]


def test_pax_header_for_long_unicode_and_big_values() -> None:
    long_name = ("d\u00e9j\u00e0/" * 40 + "file.txt").encode()
    header = tar_header(long_name, b"0", size=0, mtime=-5, uid=10**9)
    assert header[156:157] == b"x" and len(header) % 512 == 0
    info = _parse(header)
    assert info.name == long_name.decode() and info.mtime == -5 and info.uid == 10**9


def test_pax_header_for_an_8_gib_file() -> None:
    header = tar_header(b"big.bin", b"0", size=9 * GIB)
    info = tarfile.open(fileobj=io.BytesIO(header), mode="r|").next()
    assert info is not None and info.size == 9 * GIB


def test_symlink_header() -> None:
    info = _parse(tar_header(b"a/link", b"2", mode=0o120777, linkname=b"../target"))
    assert info.issym() and info.linkname == "../target"


def test_no_pax_header_when_ustar_suffices() -> None:
    assert len(tar_header(b"a" * 100, b"0")) == 512
    assert len(tar_header(b"a" * 101, b"0")) == 512 * 3


def test_redact_url() -> None:
    url = "https://s3.example.com:9000/bucket/users/u/key.tar.gz?X-Amz-Signature=abc&X-Amz-Credential=k"
    assert redact_url(url) == "https://s3.example.com:9000/bucket/users/u/key.tar.gz"
    assert redact_url("https://user:pw@host/p#frag") == "https://host/p"


def test_retry_delays() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    assert [policy.delay(n, lambda: 0.0) for n in range(8)] == [0.25, 0.5, 1, 2, 4, 8, 15, 15]
    assert [policy.delay(n, lambda: 1.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 7, 15, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Tue, 07 Jan 2025 15:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 07 Jan 2025 14:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_event_to_json() -> None:
    event = ArchiveProgress(
        config_id="c1",
        files_done=3,
        files_total=10,
        bytes_done=300,
        bytes_total=1000,
        archive_bytes=120,
        rate=100.12345,
        eta=7.0,
    )
    assert event_to_json(event, now=datetime(2025, 1, 7, 14, 30, 22, 123000, tzinfo=UTC)) == {
        "event": "archive_progress",
        "time": "2025-01-07T14:30:22.123Z",
        "configId": "c1",
        "filesDone": 3,
        "filesTotal": 10,
        "bytesDone": 300,
        "bytesTotal": 1000,
        "archiveBytes": 120,
        "rate": 100.123,
        "eta": 7.0,
    }
