"""The restore engine against a fake server and ``httpx.MockTransport`` storage: hostile archives,
corrupted and truncated objects, an interrupted download, merges and in-place restores."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from desktop_agent.engine import (
    BackupInfo,
    IntegrityError,
    PathFilter,
    RestoreError,
    RestoreOptions,
    Restorer,
    RestoreResult,
    RestoreSkipped,
    RestoreTicket,
    RetryPolicy,
    check_member,
    default_target_name,
    member_path,
)

MTIME = 1_600_000_000


# -- building archives --------------------------------------------------------------------------------


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def simple_tar() -> bytes:
    return make_tar(
        [
            (_info("home/me/docs", tarfile.DIRTYPE), None),
            (_info("home/me/docs/a.txt"), b"alpha"),
            (_info("home/me/docs/b.pdf"), b"%PDF" * 1000),
            (_info("home/me/music/c.mp3"), os.urandom(300_000)),
            (_info("home/me/docs/link", tarfile.SYMTYPE, linkname="a.txt"), None),
            (_info("home/me/docs/hard", tarfile.LNKTYPE, linkname="home/me/docs/a.txt"), None),
        ]
    )


# -- fakes --------------------------------------------------------------------------------------------


class FakeSource:
    def __init__(self, data: bytes, filename: str, *, sha256: str | None = None) -> None:
        self.data = data
        self.filename = filename
        self.sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self.size = len(data)
        self.tickets = 0

    def list_backups(self, *, config_id: str | None = None, limit: int = 100) -> list[BackupInfo]:
        return [BackupInfo(id="b1", config_name="Daily", filename=self.filename, size=self.size)]

    def restore_ticket(self, backup_id: str) -> RestoreTicket:
        self.tickets += 1
        return RestoreTicket(
            backup_id=backup_id,
            url=f"https://s3.test/obj?X-Amz-Signature=s{self.tickets}",
            size=self.size,
            sha256=self.sha256,
            filename=self.filename,
        )


class _Cut(httpx.SyncByteStream):
    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset by peer")


class Storage:
    """Serves ``stored`` (what is really in storage) with ``Range`` support; ``cut_at`` breaks the
    first response after that many bytes."""

    def __init__(self, stored: bytes, *, cut_at: int | None = None) -> None:
        self.stored = stored
        self.cut_at = cut_at
        self.ranges: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert "X-Agent-API-Key" not in request.headers
        rng = request.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        if start >= len(self.stored) and rng:
            return httpx.Response(416)
        body = self.stored[start:]
        headers = {"Content-Length": str(len(body))}
        status = 200
        if rng:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(self.stored) - 1}/{len(self.stored)}"
        if self.cut_at is not None:
            cut, self.cut_at = self.cut_at, None
            return httpx.Response(status, headers=headers, stream=_Cut(body, cut))
        return httpx.Response(status, headers=headers, content=body)


def restorer(source: FakeSource, storage: Storage, events: list[object] | None = None) -> Restorer:
    return Restorer(
        source,
        transport=httpx.MockTransport(storage),
        retry=RetryPolicy(max_attempts=3),
        sleep=lambda _: None,
        events=events.append if events is not None else None,
    )


def run(
    data: bytes,
    target: Path | None,
    filename: str = "backup-2025-01-07-143022.tar",
    stored: bytes | None = None,
    events: list[object] | None = None,
    **options: object,
) -> RestoreResult:
    source = FakeSource(data, filename)
    storage = Storage(data if stored is None else stored)
    with restorer(source, storage, events) as r:
        return r.restore("b1", RestoreOptions(target=target, **options))  # type: ignore[arg-type]


def tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                out[rel] = Path(p).read_bytes()[:20].decode("latin-1")
    return out


# -- pure helpers -------------------------------------------------------------------------------------


def test_member_path_and_default_name() -> None:
    assert member_path("a/./b//c") == ("a", "b", "c")
    assert member_path("/abs") is None and member_path("a/../b") is None
    assert member_path("C:/x") is None and member_path("..") is None
    assert default_target_name("", "backup-2025-01-07-143022.tar.zst") == (
        "backapp-restore-2025-01-07-143022"
    )
    assert default_target_name("a/../b", "x") == "backapp-restore-a-..-b-x"


def test_check_member() -> None:
    assert check_member(_info("ok/file")) is None
    assert check_member(_info("/etc/passwd")) == "absolute path or '..' in the name"
    assert check_member(_info("../x")) == "absolute path or '..' in the name"
    assert check_member(_info("dev", tarfile.CHRTYPE)) == "device file"
    assert check_member(_info("blk", tarfile.BLKTYPE)) == "device file"
    assert check_member(_info("fifo", tarfile.FIFOTYPE)) == "FIFO"
    assert check_member(_info("l", tarfile.SYMTYPE, linkname="/etc")) is not None
    assert check_member(_info("l", tarfile.SYMTYPE, linkname="/etc"), in_place=True) is None
    assert check_member(_info("a/l", tarfile.SYMTYPE, linkname="../../x")) is not None
    assert check_member(_info("a/l", tarfile.SYMTYPE, linkname="../b/x")) is None
    assert check_member(_info("h", tarfile.LNKTYPE, linkname="/etc/passwd")) is not None
    assert check_member(_info("h", tarfile.LNKTYPE, linkname="../x")) is not None


def test_path_filter() -> None:
    f = PathFilter(["/home/me/docs", "*.mp3", "nothing/here"])
    assert f.matches("home/me/docs/a.txt") and f.matches("home/me/docs")
    assert f.matches("home/me/music/c.mp3")
    assert not f.matches("home/me/docsX/a.txt") and not f.matches("home/me")
    assert f.unused() == ["nothing/here"]
    assert PathFilter(["home/**/a.txt"]).matches("home/me/docs/a.txt")
    assert not PathFilter([])


# -- happy paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst"])
def test_restore_into_a_new_folder(tmp_path: Path, fmt: str) -> None:
    raw = simple_tar()
    data = {
        "tar": raw,
        "tar.gz": gzip.compress(raw[: len(raw) // 2]) + gzip.compress(raw[len(raw) // 2 :]),
        "tar.zst": zstandard.ZstdCompressor().compress(raw),
    }[fmt]
    target = tmp_path / "out"
    result = run(data, target, filename=f"backup-x.{fmt}")
    assert result.files == 3 and result.links == 2 and result.dirs == 1 and not result.skipped
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.archive_size == len(data)
    docs = target / "home/me/docs"
    assert (docs / "a.txt").read_bytes() == b"alpha"
    assert os.readlink(docs / "link") == "a.txt"
    assert os.stat(docs / "hard").st_ino == os.stat(docs / "a.txt").st_ino
    assert int(os.stat(docs / "a.txt").st_mtime) == MTIME and int(docs.stat().st_mtime) == MTIME
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging left behind


def test_partial_restore_and_list(tmp_path: Path) -> None:
    result = run(simple_tar(), tmp_path / "out", patterns=("*.mp3", "/home/me/docs/a.txt"))
    assert result.files == 2 and result.unmatched_patterns == []
    assert sorted(tree(tmp_path / "out")) == [
        "home",
        "home/me",
        "home/me/docs",
        "home/me/docs/a.txt",
        "home/me/music",
        "home/me/music/c.mp3",
    ]
    listed = run(simple_tar(), None, list_only=True)
    assert [m.name for m in listed.members][:2] == ["home/me/docs", "home/me/docs/a.txt"]
    assert [m.kind for m in listed.members][-2:] == ["symlink", "hardlink"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_restore_into_an_existing_folder_keeps_both_when_files_differ(tmp_path: Path) -> None:
    target = tmp_path / "existing"
    docs = target / "home/me/docs"
    docs.mkdir(parents=True)
    (docs / "a.txt").write_bytes(b"edited since")  # newer than the backup's copy
    (docs / "b.pdf").write_bytes(b"old")
    os.utime(docs / "b.pdf", (MTIME - 100, MTIME - 100))  # older, edited locally: kept too
    (docs / "link").symlink_to("a.txt")  # the same link: left alone
    (target / "unrelated").write_text("stays")
    data = simple_tar()
    result = run(data, target)
    assert result.skipped == []
    stamp = result.renamed[0][1].removeprefix("a (restored ").removesuffix(").txt")
    assert time.strptime(stamp, "%Y-%m-%d %H-%M-%S")
    assert result.renamed == [
        ("home/me/docs/a.txt", f"a (restored {stamp}).txt"),
        ("home/me/docs/b.pdf", f"b (restored {stamp}).pdf"),
    ]
    assert result.replaced == [] and result.unchanged == 0
    assert (docs / "a.txt").read_bytes() == b"edited since"
    assert (docs / "b.pdf").read_bytes() == b"old"
    assert (docs / f"a (restored {stamp}).txt").read_bytes() == b"alpha"
    assert (docs / f"b (restored {stamp}).pdf").read_bytes() == b"%PDF" * 1000
    assert os.readlink(docs / "link") == "a.txt"
    assert (target / "unrelated").read_text() == "stays"
    assert not [n for n in os.listdir(target) if n.startswith(".backapp")]

    # Files already holding the backup's content are left alone.
    again = run(data, target)
    assert again.unchanged == 2  # music/c.mp3 and docs/hard
    assert [path for path, _ in again.renamed] == ["home/me/docs/a.txt", "home/me/docs/b.pdf"]
    assert (docs / f"a (restored {stamp}).txt").read_bytes() == b"alpha"

    # Replacing is a deliberate choice.
    replaced = run(data, target, overwrite=True)
    assert replaced.replaced == ["home/me/docs/a.txt", "home/me/docs/b.pdf"]
    assert replaced.renamed == [] and replaced.unchanged == 2
    assert (docs / "a.txt").read_bytes() == b"alpha"
    assert (docs / "b.pdf").read_bytes() == b"%PDF" * 1000


def test_in_place_restores_to_the_original_paths(tmp_path: Path) -> None:
    orig = tmp_path / "orig"
    orig.mkdir()
    (orig / "newer.txt").write_text("mine")
    name = str(orig).lstrip("/")
    data = make_tar(
        [
            (_info(f"{name}/lost.txt"), b"back again"),
            (_info(f"{name}/newer.txt"), b"from the backup"),
            (_info(f"{name}/abs", tarfile.SYMTYPE, linkname="/etc/hostname"), None),
        ]
    )
    result = run(data, None, in_place=True)
    assert (orig / "lost.txt").read_bytes() == b"back again"
    assert (orig / "newer.txt").read_text() == "mine" and result.skipped == []
    [(path, beside)] = result.renamed
    assert path == f"{name}/newer.txt" and (orig / beside).read_text() == "from the backup"
    assert os.readlink(orig / "abs") == "/etc/hostname"  # in place, absolute links are originals


# -- hostile archives ---------------------------------------------------------------------------------


def test_hostile_archive_writes_nothing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make_tar(
        [
            (_info("/" + str(outside / "abs.txt").lstrip("/")), b"absolute"),
            (_info("../outside/dotdot.txt"), b"dotdot"),
            (_info("sub/../../outside/dotdot2.txt"), b"dotdot"),
            (_info("etc", tarfile.SYMTYPE, linkname=str(outside)), None),
            (_info("etc/through-link.txt"), b"through a link"),
            (_info("up", tarfile.SYMTYPE, linkname=".."), None),
            (_info("up/through-up.txt"), b"through a link"),
            # a chain of links that each look harmless: q -> p/../../.. with p -> .
            (_info("a/b/p", tarfile.SYMTYPE, linkname="."), None),
            (_info("a/b/q", tarfile.SYMTYPE, linkname="p/../../.."), None),
            (_info("a/b/q/chain.txt"), b"through the chain"),
            (_info("hard-abs", tarfile.LNKTYPE, linkname=str(outside / "victim")), None),
            (_info("hard-up", tarfile.LNKTYPE, linkname="../outside/victim"), None),
            (_info("hard-missing", tarfile.LNKTYPE, linkname="not/there"), None),
            (_info("null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
            (_info("disk", tarfile.BLKTYPE, devmajor=8, devminor=0), None),
            (_info("pipe", tarfile.FIFOTYPE), None),
            (_info("ok.txt"), b"fine"),
        ]
    )
    (outside / "victim").write_text("untouched")
    events: list[object] = []
    result = run(data, tmp_path / "out", events=events)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "untouched"
    assert sorted(os.listdir(tmp_path)) == ["out", "outside"]
    assert tree(tmp_path / "out") == {
        "ok.txt": "fine",
        "a": "dir",
        "a/b": "dir",
        "a/b/p": "-> .",
    }
    skipped = dict(result.skipped)
    assert len(skipped) == 15, skipped
    assert skipped["a/b/q"].startswith("symbolic link leads outside the target")
    assert skipped["etc/through-link.txt"] == "its folder 'etc' was refused"
    assert "device file" == skipped["null"] == skipped["disk"] and skipped["pipe"] == "FIFO"
    reported = [e.path for e in events if isinstance(e, RestoreSkipped)]
    assert sorted(reported) == sorted(skipped)


def test_symlink_then_file_with_the_same_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("untouched")
    data = make_tar(
        [
            (_info("x", tarfile.SYMTYPE, linkname="../outside/x"), None),
            (_info("y", tarfile.SYMTYPE, linkname="z"), None),
            (_info("y"), b"the file replaces the link, not what it points to"),
        ]
    )
    run(data, tmp_path / "out")
    assert (outside / "x").read_text() == "untouched"
    assert not (tmp_path / "out" / "z").exists()
    assert (tmp_path / "out" / "y").read_bytes().startswith(b"the file")


# -- integrity and the network ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst"])
def test_corrupted_object_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    raw = simple_tar()
    data = {
        "tar": raw,
        "tar.gz": gzip.compress(raw),
        "tar.zst": zstandard.ZstdCompressor().compress(raw),
    }[fmt]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x40
    target = tmp_path / "out"
    with pytest.raises(IntegrityError, match="SHA-256 mismatch|damaged"):
        run(data, target, filename=f"b.{fmt}", stored=bytes(bad))
    assert os.listdir(tmp_path) == []  # neither the target nor a staging folder


def test_corruption_inside_an_existing_folder_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    bad = bytearray(simple_tar())
    bad[-2000] ^= 1
    with pytest.raises(IntegrityError):
        run(simple_tar(), target, stored=bytes(bad))
    assert os.listdir(target) == ["keep.txt"]


def test_truncated_object(tmp_path: Path) -> None:
    data = simple_tar()
    with pytest.raises(IntegrityError, match="shorter|damaged|size"):
        run(data, tmp_path / "out", stored=data[: len(data) - 700])
    assert os.listdir(tmp_path) == []


def test_interrupted_download_resumes_with_range(tmp_path: Path) -> None:
    raw = simple_tar()
    data = gzip.compress(raw)
    source = FakeSource(data, "b.tar.gz")
    storage = Storage(data, cut_at=len(data) // 3)
    with restorer(source, storage) as r:
        result = r.restore("b1", RestoreOptions(target=tmp_path / "out"))
    assert result.resumed == 1 and result.files == 3
    assert storage.ranges == [None, f"bytes={len(data) // 3}-"]
    assert (tmp_path / "out/home/me/music/c.mp3").stat().st_size == 300_000


def test_download_gives_up_after_the_retries(tmp_path: Path) -> None:
    data = simple_tar()

    def always_cut(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Length": str(len(data))}, stream=_Cut(data, 10)
        )

    source = FakeSource(data, "b.tar")
    with (
        Restorer(
            source,
            transport=httpx.MockTransport(always_cut),
            retry=RetryPolicy(max_attempts=3),
            sleep=lambda _: None,
        ) as r,
        pytest.raises(RestoreError, match="after 3 attempts"),
    ):
        r.restore("b1", RestoreOptions(target=tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_expired_url_is_replaced(tmp_path: Path) -> None:
    data = simple_tar()
    source = FakeSource(data, "b.tar")
    inner = Storage(data)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["X-Amz-Signature"] == "s1":
            return httpx.Response(403)
        return inner(request)

    with Restorer(source, transport=httpx.MockTransport(handler), sleep=lambda _: None) as r:
        result = r.restore("b1", RestoreOptions(target=tmp_path / "out"))
    assert source.tickets == 2 and result.files == 3


def test_unknown_archive_type(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="not a .tar.gz"):
        run(b"x", tmp_path / "out", filename="backup.zip")


def test_mtime_of_implicit_folders_is_recent(tmp_path: Path) -> None:
    run(make_tar([(_info("a/b/c.txt"), b"c")]), tmp_path / "out")
    assert time.time() - (tmp_path / "out/a").stat().st_mtime < 60


def test_api_client_restore_endpoints() -> None:
    from desktop_agent.engine import ApiClient

    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.content))
        assert request.headers["X-Agent-API-Key"] == "bka_test"
        if request.url.path == "/api/agent/backups":
            return httpx.Response(
                200,
                json={
                    "success": True,
                    "backups": [
                        {
                            "id": "b1",
                            "configId": "c1",
                            "configName": "Daily",
                            "filename": "backup-x.tar.gz",
                            "s3Path": "users/u/x",
                            "size": 10,
                            "sha256": "ab",
                            "filesProcessed": 3,
                            "startedAt": "2025-01-07T15:00:00Z",
                            "completedAt": "2025-01-07T15:00:05Z",
                            "status": "completed",
                            "somethingNew": 1,
                        }
                    ],
                },
            )
        return httpx.Response(
            200,
            json={
                "success": True,
                "restore": {
                    "backupId": "b1",
                    "url": "https://s3/x?sig",
                    "method": "GET",
                    "expiresAt": "…",
                    "size": 10,
                    "sha256": "ab",
                    "filename": "backup-x.tar.gz",
                    "s3Path": "users/u/x",
                },
            },
        )

    with ApiClient("http://backapp.test", "bka_test", transport=httpx.MockTransport(handler)) as c:
        [info] = c.list_backups(config_id="c1", limit=5)
        ticket = c.restore_ticket("b1")
    assert info == BackupInfo(
        id="b1",
        config_id="c1",
        config_name="Daily",
        filename="backup-x.tar.gz",
        s3_path="users/u/x",
        size=10,
        sha256="ab",
        files_processed=3,
        started_at="2025-01-07T15:00:00Z",
        completed_at="2025-01-07T15:00:05Z",
    )
    assert ticket.url == "https://s3/x?sig" and ticket.size == 10 and ticket.sha256 == "ab"
    assert seen[0][:2] == ("GET", "http://backapp.test/api/agent/backups?configId=c1&limit=5")
    assert seen[1] == ("POST", "http://backapp.test/api/agent/restore", b'{"backupId":"b1"}')


def test_cancel_leaves_nothing(tmp_path: Path) -> None:
    from desktop_agent.engine import BackupCancelled, CancelToken, RestoreProgress

    cancel = CancelToken()

    def on_event(event: object) -> None:
        if isinstance(event, RestoreProgress):
            cancel.cancel("cancelled by the user")

    data = simple_tar()
    source = FakeSource(data, "b.tar")
    with (
        Restorer(source, transport=httpx.MockTransport(Storage(data)), events=on_event) as r,
        pytest.raises(BackupCancelled, match="cancelled by the user"),
    ):
        r.restore("b1", RestoreOptions(target=tmp_path / "out"), cancel=cancel)
    assert os.listdir(tmp_path) == []
