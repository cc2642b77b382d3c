"""Render the restore window's states for the README and docs (``docs/images/restore-*.png``) with
made-up backups of a made-up home folder, so that no real path shows:

* ``restore-browse.png``: a snapshot's Documents folder open, two files chosen;
* ``restore-search.png``: a search by name across the backup;
* ``restore-full-archive.png``: a full archive chosen (it restores as a whole);
* ``restore-progress.png``: a restore running, with its progress and *Cancel Restore*;
* ``restore-window.png``: the summary of a restore that kept a locally edited file beside its
  restored copy.

    QT_QPA_PLATFORM=offscreen python -m tests.desktop_agent.gui.render_restore_screen docs/images
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from PySide6.QtWidgets import QApplication

from desktop_agent.engine import RestoreProgress, RestoreResult
from desktop_agent.gui._restore import BackupChoice, FileRow, RestoreSource
from desktop_agent.gui._windows.restore import RestoreWindow

HOME = "home/ada"


class MadeUpSource:
    """Stands in for ``RestoreSource``: canned backups and folders."""

    def backups(self) -> list[BackupChoice]:
        now = datetime.now(UTC).replace(hour=14, minute=2)
        return [
            BackupChoice("s3", "c1", "Home folder", now, True, 2_400_000_000, 31_204),
            BackupChoice(
                "s2", "c1", "Home folder", now - timedelta(days=1), True, 2_390_000_000, 31_180
            ),
            BackupChoice(
                "s1", "c1", "Home folder", now - timedelta(days=3), True, 2_380_000_000, 31_002
            ),
            BackupChoice(
                "f1",
                "c2",
                "Photos (archive)",
                now - timedelta(hours=5),
                False,
                8_500_000_000,
                4_210,
            ),
        ]

    def folder(self, backup_id: str, path: str = "") -> list[FileRow]:
        stamp = "Yesterday 18:40"
        if not path:
            return [FileRow("home", "home", True, "", stamp)]
        if path == "home":
            return [FileRow(HOME, "ada", True, "", stamp)]
        if path == HOME:
            names = ["Desktop", "Documents", "Music", "Pictures"]
            return [FileRow(f"{HOME}/{n}", n, True, "", stamp) for n in names]
        files = [
            ("Invoices", True, ""),
            ("Taxes 2026", True, ""),
            ("budget.ods", False, "48.2 KiB"),
            ("cv.pdf", False, "212.7 KiB"),
            ("notes.txt", False, "3.1 KiB"),
            ("thesis draft.odt", False, "1.4 MiB"),
        ]
        return [FileRow(f"{path}/{n}", n, d, size, "Today 11:15") for n, d, size in files]

    def search(self, backup_id: str, text: str, wanted: Any = None) -> list[FileRow]:
        found = [
            (f"{HOME}/Documents/notes.txt", "3.1 KiB", "Today 11:15"),
            (f"{HOME}/Documents/Taxes 2026/notes for the accountant.pdf", "88.0 KiB", "2 Mar 2026"),
            (f"{HOME}/Desktop/notes (old).txt", "1.2 KiB", "14 Jan 2025"),
            (f"{HOME}/Music/liner notes.txt", "640 B", "3 Aug 2024"),
        ]
        return [FileRow(p, p.rsplit("/", 1)[-1], False, size, when) for p, size, when in found]

    def __init__(self) -> None:
        self.release = threading.Event()

    def restore(
        self, choice: BackupChoice, options: Any, events: Any, cancel: Any
    ) -> RestoreResult:
        """Half-way through, until ``release`` is set (the window shows its progress)."""
        events(
            RestoreProgress(
                backup_id=choice.id,
                bytes_downloaded=640_000,
                size=1_471_000,
                files=1,
                bytes_written=640_000,
                rate=260_000.0,
                eta=3.2,
            )
        )
        self.release.wait(30)
        return RESULT


def wait(app: QApplication, until: Any, seconds: float = 10) -> None:
    end = time.monotonic() + seconds
    while not until() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


RESULT = RestoreResult(
    backup_id="s3",
    filename="snapshot",
    target=Path("/"),
    files=2,
    bytes=1_471_000,
    unchanged=1,
    renamed=[(f"{HOME}/Documents/notes.txt", "notes (restored 2026-12-02 14-05-31).txt")],
)


def main(out: Path) -> None:
    app = QApplication.instance() or QApplication(sys.argv)
    assert isinstance(app, QApplication)
    out.mkdir(parents=True, exist_ok=True)
    source = MadeUpSource()
    window = RestoreWindow(lambda: cast(RestoreSource, source))
    window.resize(980, 640)
    window.show()
    window.load_backups()
    wait(app, lambda: len(window.backup_items()) == 4)
    window.backups.setCurrentItem(window.backup_items()[0])
    for path in ("home", HOME, f"{HOME}/Documents"):
        wait(app, lambda p=path: window.find_item(p) is not None)
        item = window.find_item(path)
        assert item is not None
        window.files.expandItem(item)
    wait(app, lambda: window.find_item(f"{HOME}/Documents/notes.txt") is not None)
    for name in ("notes.txt", "thesis draft.odt"):
        item = window.find_item(f"{HOME}/Documents/{name}")
        assert item is not None
        item.setSelected(True)
    app.processEvents()
    window.grab().save(str(out / "restore-browse.png"))

    # A restore to the original location, half-way, then its summary.
    assert window.start_restore(None)
    wait(app, lambda: window.progress.value() > 0)
    window.grab().save(str(out / "restore-progress.png"))
    source.release.set()
    wait(app, lambda: not window.busy)
    window.grab().save(str(out / "restore-window.png"))

    # A search by name across the backup.
    window.summary.clear()
    window.status.clear()
    window.search.setText("notes")
    window._run_search()
    wait(app, lambda: window.files.topLevelItemCount() == 4)
    first = window.files.topLevelItem(0)
    assert first is not None
    first.setSelected(True)
    app.processEvents()
    window.grab().save(str(out / "restore-search.png"))

    # The full archive: no tree, restored whole.
    window.backups.setCurrentItem(window.backup_items()[3])
    wait(app, lambda: "whole archive" in window.note.text())
    window.status.clear()
    window.grab().save(str(out / "restore-full-archive.png"))
    window.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "test-output/screenshots"))
