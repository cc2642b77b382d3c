"""The restore window (*Restore Files…*) against a real ``backapp serve`` process and a real S3
endpoint (moto in server mode), with a real snapshot and a real full archive made by the real
``backapp-agent``: the backups by date, a snapshot's folders opened one by one, a search by name,
two files restored to another folder, a locally edited file kept beside the restored copy (and
replaced on request), a full archive restored whole, and a cancel. Offscreen, with the real Qt
event loop."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from desktop_agent.engine import KeyStore
from desktop_agent.gui._windows.restore import RestoreWindow
from tests.support.agent_process import Agent, setup
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app, pair

pytestmark = pytest.mark.e2e

WAIT = 60_000
MTIME = 1_700_000_000


def make_tree(src: Path) -> None:
    (src / "docs" / "sub").mkdir(parents=True)
    (src / "photos").mkdir()
    (src / "docs" / "notes.txt").write_text("my notes, as backed up\n")
    (src / "docs" / "report [v2].pdf").write_bytes(b"%PDF-" + bytes(range(256)) * 40)
    (src / "docs" / "sub" / "deep.txt").write_text("deep down\n")
    (src / "photos" / "cat.jpg").write_bytes(os.urandom(300_000))
    for path in src.rglob("*"):
        os.utime(path, (MTIME, MTIME))


def open_folder(qtbot: Any, window: RestoreWindow, path: str) -> None:
    """Expand every folder on the way to ``path``, as a user clicks them open."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        here = "/".join(parts[:depth])
        qtbot.waitUntil(lambda h=here: window.find_item(h) is not None, timeout=WAIT)
        item = window.find_item(here)
        assert item is not None
        window.files.expandItem(item)
        qtbot.waitUntil(
            lambda i=item: (
                i.childCount() > 0 and i.child(0).data(0, Qt.ItemDataRole.UserRole) is not None
            ),
            timeout=WAIT,
        )


def choose_backup(qtbot: Any, window: RestoreWindow, config_name: str, index: int = 0) -> None:
    """Click a configuration's backup: the newest, or the ``index``-th newest."""
    for i in range(window.backups.topLevelItemCount()):
        group = window.backups.topLevelItem(i)
        if group.text(0) == config_name:
            window.backups.setCurrentItem(group.child(index))
            return
    raise AssertionError(f"no backup of {config_name}")


def restore(qtbot: Any, window: RestoreWindow, button: Any) -> str:
    with qtbot.waitSignal(window.restore_done, timeout=WAIT) as done:
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    text = str(done.args[0])
    assert not window.busy and window.to_original.isEnabled()
    return text


def test_browse_search_restore_and_keep_both(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
    screenshots: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_server: S3Endpoint,
    s3_bucket: str,
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    _owner, _agent_id, key, _ = setup(
        server,
        {"name": "Home", "sources": [{"path": str(src)}], "options": {"type": "incremental"}},
        {"name": "Archive", "sources": [{"path": str(src / "photos")}]},
    )
    cache = tmp_path / "agent-cache"
    # The real command line makes the backups, in the folder the tray app reads (same key files).
    agent = Agent(tmp_path, server.url, key, BACKAPP_CACHE_DIR=str(cache))
    assert agent_dir == tmp_path / "agent-config"
    for step in range(2):
        if step == 1:
            (src / "docs" / "added later.txt").write_text("only in the second backup\n")
        done = agent.run("run")
        assert done.returncode == 0, done.stderr + done.stdout
    monkeypatch.setenv("BACKAPP_CACHE_DIR", str(cache))
    pair(server.url, key, keystore)

    app, _fake, recorder = make_app(agent_dir, keystore)
    try:
        action = app.menu.actions["restore"]
        assert action.text() == "Restore Files…" and action.isEnabled()
        action.trigger()
        window = app.restore
        assert window is not None and window.isVisible()
        qtbot.waitUntil(lambda: len(window.backup_items()) == 4, timeout=WAIT)
        groups = [window.backups.topLevelItem(i).text(0) for i in range(2)]
        assert groups == ["Archive", "Home"]
        labels = [item.text(0) for item in window.backup_items()]
        assert all(re.match(r"Today \d\d:\d\d · ", label) for label in labels), labels
        assert ["full archive" in label for label in labels] == [True, True, False, False]
        assert not window.to_original.isEnabled()

        # A full archive: the user is told it is read whole; no tree, no search.
        choose_backup(qtbot, window, "Archive")
        assert "the whole archive" in window.note.text()
        assert not window.files.isEnabled() and not window.search.isEnabled()
        assert window.to_folder.isEnabled()

        # The snapshot: open the folders down to docs, with sizes and dates.
        choose_backup(qtbot, window, "Home")
        assert "Only the data they need is downloaded" in window.note.text()
        root = str(src).strip("/")
        open_folder(qtbot, window, f"{root}/docs")
        docs = window.find_item(f"{root}/docs")
        assert docs is not None
        names = [docs.child(i).text(0) for i in range(docs.childCount())]
        assert names == ["sub", "added later.txt", "notes.txt", "report [v2].pdf"]  # folders first
        report = window.find_item(f"{root}/docs/report [v2].pdf")
        assert report is not None
        assert report.text(1) == "10.0 KiB" and re.match(r"\d+ \w+ 2023 \d\d:\d\d", report.text(2))
        assert window.find_item(f"{root}/docs/sub/deep.txt") is None  # not read until opened
        window.grab().save(str(screenshots / "restore-browse.png"))

        # The same folder as it was at the backup before: it opens by itself.
        choose_backup(qtbot, window, "Home", 1)
        qtbot.waitUntil(
            lambda: (d := window.find_item(f"{root}/docs")) is not None and d.childCount() == 3,
            timeout=WAIT,
        )
        docs = window.find_item(f"{root}/docs")
        assert docs is not None and docs.isExpanded()
        assert [docs.child(i).text(0) for i in range(3)] == ["sub", "notes.txt", "report [v2].pdf"]

        # Search by name across the backup.
        window.search.setText(".txt")
        qtbot.waitUntil(lambda: "2 matches" in window.status.text(), timeout=WAIT)
        found = [window.files.topLevelItem(i).text(0) for i in range(2)]
        assert sorted(found) == [f"/{root}/docs/notes.txt", f"/{root}/docs/sub/deep.txt"]

        # Restore the two found files into another folder (watching the progress it reports).
        progress: list[str] = []

        def watch(busy: bool) -> None:
            if busy and window.worker is not None:  # before the worker starts: nothing is missed
                window.worker.signals.progress.connect(
                    lambda _e: progress.append(window.status.text())
                )

        window.busy_changed.connect(watch)
        for i in range(2):
            window.files.topLevelItem(i).setSelected(True)
        assert window.selection.text() == "2 items chosen."
        out = tmp_path / "restored here"
        window._choose_folder = lambda _parent: str(out)
        summary = restore(qtbot, window, window.to_folder)
        assert summary.startswith(f"Restored 2 files (33 B) to {out}."), summary
        assert (out / root / "docs/notes.txt").read_text() == "my notes, as backed up\n"
        assert (out / root / "docs/sub/deep.txt").read_text() == "deep down\n"
        assert not (out / root / "photos").exists()
        assert progress and re.match(r"2 files · 33 B of 33 B · [\d.]+ \w+/s", progress[-1])
        window.grab().save(str(screenshots / "restore-done.png"))

        # A locally edited file is kept; the restored copy goes beside it.
        (src / "docs" / "notes.txt").write_text("edited here since\n")
        window.search.setText("notes")
        qtbot.waitUntil(lambda: "1 match for" in window.status.text(), timeout=WAIT)
        window.files.topLevelItem(0).setSelected(True)
        assert window.keep_both.isChecked()
        summary = restore(qtbot, window, window.to_original)
        assert (src / "docs" / "notes.txt").read_text() == "edited here since\n"
        [beside] = [p for p in (src / "docs").iterdir() if p.name.startswith("notes (restored ")]
        assert beside.read_text() == "my notes, as backed up\n"
        assert re.fullmatch(r"notes \(restored \d{4}-\d\d-\d\d \d\d-\d\d-\d\d\)\.txt", beside.name)
        assert "existing file(s) differ and were kept" in summary
        assert f"  /{root}/docs/notes.txt  →  {beside.name}" in summary
        window.grab().save(str(screenshots / "restore-kept-both.png"))

        # Replace is a deliberate choice.
        window.replace.setChecked(True)
        summary = restore(qtbot, window, window.to_original)
        assert (src / "docs" / "notes.txt").read_text() == "my notes, as backed up\n"
        assert f"1 existing file(s) replaced:\n  /{root}/docs/notes.txt" in summary
        window.keep_both.setChecked(True)

        # The full archive restores whole, into a chosen folder.
        choose_backup(qtbot, window, "Archive")
        out2 = tmp_path / "archive here"
        window._choose_folder = lambda _parent: str(out2)
        summary = restore(qtbot, window, window.to_folder)
        assert summary.startswith("Restored 1 file (293.0 KiB)"), summary
        [cat] = list(out2.rglob("cat.jpg"))
        assert cat.read_bytes() == (src / "photos" / "cat.jpg").read_bytes()
        for text in (summary, window.status.text(), window.note.text()):
            assert "Error" not in text and "{" not in text

        # Cancel: the restore stops, the window says so in words and is ready again.
        choose_backup(qtbot, window, "Home")
        window.search.setText("docs")
        qtbot.waitUntil(lambda: "1 match for" in window.status.text(), timeout=WAIT)
        window.files.topLevelItem(0).setSelected(True)
        out3 = tmp_path / "cancelled here"
        window._choose_folder = lambda _parent: str(out3)
        with qtbot.waitSignal(window.restore_done, timeout=WAIT) as stopped:
            qtbot.mouseClick(window.to_folder, Qt.MouseButton.LeftButton)
            assert window.busy and window.cancel_button.isVisible()
            assert not window.to_original.isEnabled() and not window.backups.isEnabled()
            qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
        assert stopped.args[0] == (
            "The restore was cancelled. Files already restored stay where they are."
        )
        assert not window.busy and not window.cancel_button.isVisible()
        assert not list(out3.rglob("*.txt"))

        # Quitting during a restore asks first; a restore that ends with the window closed is
        # told in a notification.
        recorder.answer = False
        choose_backup(qtbot, window, "Archive")
        window.hide()
        out4 = tmp_path / "while hidden"
        with qtbot.waitSignal(window.restore_done, timeout=WAIT):
            assert window.start_restore(out4)
            assert app.request_quit() is False and window.busy
            assert recorder.questions[-1] == "Stop the restore and quit?"
        assert recorder.notifications[-1] == (
            "Restore finished",
            f"Restored 1 file (293.0 KiB) to {out4}.",
            False,
        )
    finally:
        close_app(app)
