"""The restore window shows a huge folder a page at a time (making 20,000 rows would hold the GUI
thread for seconds): the first ``PAGE`` entries and a row that shows the next page when
double-clicked. A unit test of the window with a canned source (the e2e tests use a real one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from PySide6.QtCore import Qt

from desktop_agent.gui._restore import BackupChoice, FileRow, RestoreSource
from desktop_agent.gui._windows.restore import PAGE, RestoreWindow

BIG = 2 * PAGE + 345


class CannedSource:
    recovery_code: str | None = None
    code_problem: str | None = None

    def backups(self) -> list[BackupChoice]:
        return [BackupChoice("s1", "c1", "Home", datetime.now(UTC), True, 1000, BIG + 1)]

    def folder(self, backup_id: str, path: str = "", agent_id: str | None = None) -> list[FileRow]:
        if not path:
            return [FileRow("big", "big", True, "", "Today 10:00")]
        return [
            FileRow(f"big/f{i:05d}.txt", f"f{i:05d}.txt", False, "2 B", "Today 10:00")
            for i in range(BIG)
        ]


def test_a_huge_folder_shows_a_page_at_a_time(qtbot: Any) -> None:
    window = RestoreWindow(lambda: cast(RestoreSource, CannedSource()))
    qtbot.addWidget(window)
    window.show()
    window.load_backups()
    qtbot.waitUntil(lambda: len(window.backup_items()) == 1)
    window.backups.setCurrentItem(window.backup_items()[0])
    qtbot.waitUntil(lambda: window.find_item("big") is not None)
    big = window.find_item("big")
    assert big is not None
    window.files.expandItem(big)
    qtbot.waitUntil(lambda: big.childCount() > 1)

    assert big.childCount() == PAGE + 1
    more = big.child(PAGE)
    assert more.text(0) == f"… {BIG - PAGE:,} more in this folder: double-click to show 1,000 more"
    assert not more.flags() & Qt.ItemFlag.ItemIsSelectable
    assert window.find_item(f"big/f{PAGE - 1:05d}.txt") is not None
    assert window.find_item(f"big/f{PAGE:05d}.txt") is None

    window.files.itemDoubleClicked.emit(more, 0)
    assert big.childCount() == 2 * PAGE + 1
    assert big.child(2 * PAGE).text(0).startswith(f"… {BIG - 2 * PAGE:,} more in this folder")
    assert not window.show_more(big.child(0))  # a file's row: nothing to show
    assert window.show_more(big.child(2 * PAGE))
    assert big.childCount() == BIG  # the last page, and no more row
    names = {big.child(i).text(0) for i in range(big.childCount())}
    assert len(names) == BIG and f"f{BIG - 1:05d}.txt" in names

    # the rows shown later are chosen like the first ones
    window.files.clearSelection()
    last = window.find_item(f"big/f{BIG - 1:05d}.txt")
    assert last is not None
    last.setSelected(True)
    assert window.model.selected == {f"big/f{BIG - 1:05d}.txt"}
    assert window.to_folder.isEnabled()
