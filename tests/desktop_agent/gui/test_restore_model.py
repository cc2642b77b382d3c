"""The restore browser's Qt-free part: dates as people say them, the chosen paths as patterns that
select exactly them, the options a restore runs with, and the words of the summary."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import desktop_agent.gui._restore as restore_module
from desktop_agent.engine import PathFilter, RestoreProgress, RestoreResult
from desktop_agent.gui._restore import (
    BackupChoice,
    RestoreModel,
    backup_label,
    path_pattern,
    progress_text,
    summary_text,
)


def test_doctests() -> None:
    import desktop_agent.gui._status as status_module
    import desktop_agent.gui._words as words_module

    for module in (restore_module, words_module, status_module):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module


def test_backup_labels() -> None:
    now = datetime(2026, 12, 2, 10, 0)  # a Wednesday
    assert backup_label(datetime(2026, 12, 2, 0, 1), now) == "Today 00:01"
    assert backup_label(datetime(2026, 12, 1, 23, 59), now) == "Yesterday 23:59"
    assert backup_label(datetime(2026, 11, 26, 18, 0), now) == "Thursday 18:00"
    assert backup_label(datetime(2026, 11, 25, 18, 0), now) == "25 Nov 18:00"
    assert backup_label(datetime(2025, 12, 2, 9, 0), now) == "2 Dec 2025 09:00"


def test_a_chosen_path_selects_exactly_itself() -> None:
    names = [
        "home/me/report [final].pdf",
        "home/me/report f.pdf",
        "home/me/a*b.txt",
        "home/me/axxb.txt",
        "home/me/docs/x.txt",
        "home/me/docs2/y.txt",
        "srv/home/z.txt",
    ]
    for chosen, expected in (
        ("home/me/report [final].pdf", ["home/me/report [final].pdf"]),
        ("home/me/a*b.txt", ["home/me/a*b.txt"]),
        ("home/me/docs", ["home/me/docs/x.txt"]),
        ("home", names[:6]),
    ):
        f = PathFilter([path_pattern(chosen)])
        assert [n for n in names if f.matches(n)] == expected, chosen


def test_options_keep_both_unless_replace_is_chosen(tmp_path: Path) -> None:
    snap = BackupChoice("b1", "c1", "Home", datetime.now(UTC), True, 10, 1)
    full = BackupChoice("b2", "c1", "Home", datetime.now(UTC), False, 10, 1)
    model = RestoreModel()
    model.set_backups([full, snap])
    model.choose(snap)
    assert not model.can_restore()  # nothing chosen yet
    model.selected = {"home/me/b.txt", "home/me/a.txt"}
    options = model.options(None)
    assert options.in_place and not options.overwrite
    assert options.patterns == ("/home/me/a.txt", "/home/me/b.txt")
    model.replace = True
    options = model.options(tmp_path)
    assert options.target == tmp_path and options.overwrite and not options.in_place
    model.choose(full)
    assert model.can_restore() and model.options(tmp_path).patterns == ()
    assert "the whole archive (10 B) must be read" in model.note()


def test_summary_lists_every_file_kept_renamed_or_replaced() -> None:
    result = RestoreResult(
        backup_id="b1",
        filename="snapshot",
        target=Path("/"),
        files=3,
        bytes=3 * 1024 * 1024,
        renamed=[("home/me/a.txt", "a (restored 2026-12-01 14-02-00).txt")],
        replaced=["home/me/b.txt"],
        unchanged=1,
        skipped=[("home/me/c.txt", "pack 0123… is missing from storage")],
    )
    text = summary_text(result)
    assert text.splitlines() == [
        "Restored 3 files (3.0 MiB) to their original location.",
        "1 already there with the same content: left as they were.",
        "1 existing file(s) differ and were kept; the restored copy is beside each:",
        "  /home/me/a.txt  →  a (restored 2026-12-01 14-02-00).txt",
        "1 existing file(s) replaced:",
        "  /home/me/b.txt",
        "1 could not be restored:",
        "  /home/me/c.txt: pack 0123… is missing from storage",
    ]


def test_progress_in_words() -> None:
    event = RestoreProgress(
        backup_id="b1",
        bytes_downloaded=5 * 1024 * 1024,
        size=10 * 1024 * 1024,
        files=1234,
        bytes_written=3 * 1024 * 1024,
        rate=1024 * 1024,
        eta=75,
    )
    assert (
        progress_text(event) == "1,234 files · 3.0 MiB of 10.0 MiB · 1.0 MiB/s · about 1m 15s left"
    )
    one = RestoreProgress(
        backup_id="b", bytes_downloaded=0, size=0, files=1, bytes_written=10, rate=0.0, eta=None
    )
    assert progress_text(one) == "1 file · 10 B · 0 B/s"


def test_failures_in_words(tmp_path: Path) -> None:
    """A server that does not answer, a refused key, a folder that cannot be written: sentences,
    never an exception's name or an errno (through the real calls where they are quick)."""
    from desktop_agent.engine import AgentSettings, AuthenticationError
    from desktop_agent.gui._restore import RestoreProblem, RestoreSource, in_words

    assert in_words(AuthenticationError(401, "unauthorized", "invalid API key")) == (
        "The server did not accept this computer's key: pair it again in Settings."
    )
    (tmp_path / "a file").write_text("x")
    with pytest.raises(OSError) as caught:
        (tmp_path / "a file" / "below").mkdir()
    assert in_words(caught.value) == f"Not a directory: {tmp_path / 'a file' / 'below'}"
    source = RestoreSource(AgentSettings(server_url="http://127.0.0.1:9"), "bka_x")
    try:
        source.backups()
    except RestoreProblem as exc:
        text = str(exc)
    assert text == (
        "The server did not answer at http://127.0.0.1:9. "
        "Check the network connection, then try again."
    )


def test_a_search_nobody_waits_for_stops_walking() -> None:
    from desktop_agent.engine import SnapshotEntry
    from desktop_agent.gui._restore import _matching

    walked: list[int] = []

    def entries() -> Iterator[SnapshotEntry]:
        for i in range(10_000):
            walked.append(i)
            yield SnapshotEntry(f"home/me/file{i}.txt", "file", 1, 0o644, 0)

    assert len(list(_matching(entries(), "file", lambda: True))) == 10_000
    walked.clear()
    still = iter([True, True, False])
    assert len(list(_matching(entries(), "file", lambda: next(still)))) == 2000
    assert len(walked) == 2001


def test_next_backup_in_words() -> None:
    """The next backup as the menu, the status window and the pairing panel say it."""
    from datetime import timedelta

    from desktop_agent.gui._status import next_backup_text

    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    local = now.astimezone()
    today = local.replace(hour=23, minute=30)
    assert next_backup_text(None, now=now) == "no schedule (Back Up Now only)"
    assert next_backup_text(now - timedelta(seconds=1), now=now) == "due now"
    if today > local:
        assert next_backup_text(today, now=now) == "today 23:30"
    tomorrow = (local + timedelta(days=1)).replace(hour=2, minute=0)
    assert next_backup_text(tomorrow, now=now) == "tomorrow 02:00"
    later = local + timedelta(days=5)
    assert next_backup_text(later, now=now) == f"{later:%a} {later.day} {later:%b %H:%M}"
    paused = next_backup_text(now + timedelta(minutes=5), now + timedelta(hours=1), now)
    assert (
        paused
        == f"paused until {(now + timedelta(hours=1)).astimezone():%H:%M}, then the missed one at once"
    )


def test_failures_from_text_in_words() -> None:
    from desktop_agent.gui._words import failure_text

    raw = (
        "could not reach the BackApp server at https://b.example:8443 (/api/agent/heartbeat): "
        "ConnectError: [Errno 111] Connection refused (after 2 attempts)"
    )
    assert failure_text(raw) == (
        "the server did not answer at https://b.example:8443: check the network connection, "
        "then try again"
    )
    assert failure_text("request to http://h/api/x failed: timed out") == (
        "the server did not answer at http://h: check the network connection, then try again"
    )
    assert failure_text("cannot write: OSError: [Errno 28] No space left on device") == (
        "cannot write: No space left on device"
    )
    assert failure_text("key bka_secret123 refused") == "key bka_…(hidden) refused"
