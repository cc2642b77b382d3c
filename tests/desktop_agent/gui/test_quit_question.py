"""The quit question (offscreen): its default and Escape answers are the safe one, *No*, so a
reflexive Enter while a backup or restore runs does not stop it."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop_agent.gui import app as gui_app


def _answer_with(key: Qt.Key, seen: list[Any]) -> None:
    def press() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(10, press)
            return
        seen.append(box.defaultButton() is box.button(QMessageBox.StandardButton.No))
        from pytestqt.qtbot import QtBot

        QtBot.keyClick(box, key)

    QTimer.singleShot(10, press)


def test_enter_and_escape_answer_no(qtbot: Any) -> None:
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Escape):
        seen: list[Any] = []
        _answer_with(key, seen)
        assert gui_app._ask(None, "Stop the backup and quit?", "A backup is running.") is False
        assert seen == [True]


def test_yes_is_still_a_deliberate_choice(qtbot: Any) -> None:
    def press() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(10, press)
            return
        box.button(QMessageBox.StandardButton.Yes).click()

    QTimer.singleShot(10, press)
    assert gui_app._ask(None, "Stop the backup and quit?", "A backup is running.") is True
