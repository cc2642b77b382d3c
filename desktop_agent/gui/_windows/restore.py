"""The restore window (*Restore Files…*): the backups by configuration and date, a snapshot's files in
a tree whose folders load as they are opened, a search by name, and a restore of the chosen files to
their original location or to a chosen folder, with progress, cancel and a summary.

Every call that waits on the network or the disk runs off the GUI thread (``run_task`` for the
listings, ``RestoreWorker`` for the restore); the state and the words are ``_restore.RestoreModel``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_agent.engine import (
    BackupCancelled,
    CancelToken,
    Event,
    RestoreOptions,
    RestoreProgress,
    RestoreResult,
)

from .._restore import (
    MAX_SEARCH_RESULTS,
    BackupChoice,
    FileRow,
    RestoreModel,
    RestoreSource,
    progress_text,
    summary_text,
)
from .._text import redact
from .._workers import run_task
from .recovery import RecoveryCodeDialog

__all__ = ["RestoreWindow", "RestoreWorker"]

_ROW = Qt.ItemDataRole.UserRole
"""Item data: the ``BackupChoice`` (backups list) or the ``FileRow`` (files tree)."""
_LOADED = Qt.ItemDataRole.UserRole + 1
"""Item data: a folder's entries were loaded (or are loading)."""
_MORE = Qt.ItemDataRole.UserRole + 2
"""On a folder's last row when it holds more entries than shown: ``(rows, next index)``."""

PAGE = 1000
"""Entries of a folder shown at once. Making a row costs the GUI thread about 0.1 ms (more on a
busy machine), so a 20,000-entry folder would freeze it for seconds; the rest come a page at a
time when asked for (and the search finds any file by name)."""

ChooseFolder = Callable[[QWidget], str | None]


def _choose_folder(parent: QWidget) -> str | None:
    return QFileDialog.getExistingDirectory(parent, "Restore to…") or None


class _RestoreSignals(QObject):
    progress = Signal(object)
    """A ``RestoreProgress``."""
    finished = Signal(object)
    """The ``RestoreResult``."""
    failed = Signal(str)
    cancelled = Signal()


class RestoreWorker(QRunnable):
    """One restore on a pool thread; ``cancel`` stops it between files."""

    def __init__(
        self, source: RestoreSource, choice: BackupChoice, options: RestoreOptions
    ) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.source = source
        self.choice = choice
        self.options = options
        self.cancel = CancelToken()
        self.signals = _RestoreSignals()

    def _event(self, event: Event) -> None:
        if isinstance(event, RestoreProgress):
            self.signals.progress.emit(event)

    def run(self) -> None:
        try:
            result = self.source.restore(self.choice, self.options, self._event, self.cancel)
        except BackupCancelled:
            self.signals.cancelled.emit()
        except Exception as exc:  # shown in words; the engine's errors are sentences
            self.signals.failed.emit(redact(str(exc)) or "It stopped unexpectedly.")
        else:
            self.signals.finished.emit(result)


class RestoreWindow(QWidget):
    """*Restore Files…*. ``source`` makes the blocking calls' ``RestoreSource`` (``None`` when the
    app is not paired); ``choose_folder`` asks where *Restore to…* goes (injectable for tests)."""

    busy_changed = Signal(bool)
    restore_done = Signal(str)
    """The summary (or why it stopped), when a restore ends."""

    def __init__(
        self,
        source: Callable[[], RestoreSource | None],
        *,
        pool: QThreadPool | None = None,
        choose_folder: ChooseFolder = _choose_folder,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("BackApp — Restore Files")
        self.resize(900, 600)
        self.model = RestoreModel()
        self._source = source
        self._pool = pool or QThreadPool.globalInstance()
        self._choose_folder = choose_folder
        self.worker: RestoreWorker | None = None
        self.code_dialog: RecoveryCodeDialog | None = None
        self._search_serial = 0
        self._reopen: set[str] = set()
        """Folders to open again as they load (those open in the backup chosen before)."""

        self.backups = QTreeWidget()
        self.backups.setObjectName("backups")
        self.backups.setHeaderLabels(["Backups"])
        self.backups.itemSelectionChanged.connect(self._backup_chosen)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.load_backups)

        self.note = QLabel()
        self.note.setWordWrap(True)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search by name…")
        self.search.setClearButtonEnabled(True)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(300)
        self._search_timer.timeout.connect(self._run_search)
        self.search.textChanged.connect(lambda _text: self._search_timer.start())
        self.search.returnPressed.connect(self._run_search)

        self.files = QTreeWidget()
        self.files.setObjectName("files")
        self.files.setHeaderLabels(["Name", "Size", "Modified"])
        self.files.setColumnWidth(0, 340)
        self.files.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.files.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long paths keep their names
        self.files.itemExpanded.connect(self._expanded)
        self.files.itemDoubleClicked.connect(lambda item, _column: self.show_more(item))
        self.files.itemSelectionChanged.connect(self._files_chosen)
        self.selection = QLabel()

        self.keep_both = QRadioButton(
            "Keep both: a restored file whose name is taken gets “(restored date time)” added"
        )
        self.keep_both.setChecked(True)
        self.replace = QRadioButton("Replace existing files that differ")
        self.replace.toggled.connect(self._replace_toggled)
        self.to_original = QPushButton("Restore to Original Location")
        self.to_original.clicked.connect(lambda: self.start_restore(None))
        self.to_folder = QPushButton("Restore to…")
        self.to_folder.clicked.connect(self._restore_to_folder)
        self.cancel_button = QPushButton("Cancel Restore")
        self.cancel_button.clicked.connect(self.cancel_restore)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setMaximumHeight(140)

        left = QWidget()
        left_box = QVBoxLayout(left)
        left_box.setContentsMargins(0, 0, 0, 0)
        left_box.addWidget(self.backups)
        left_box.addWidget(self.refresh_button)
        right = QWidget()
        right_box = QVBoxLayout(right)
        right_box.setContentsMargins(0, 0, 0, 0)
        right_box.addWidget(self.note)
        right_box.addWidget(self.search)
        right_box.addWidget(self.files, 1)
        right_box.addWidget(self.selection)
        right_box.addWidget(self.keep_both)
        right_box.addWidget(self.replace)
        buttons = QHBoxLayout()
        buttons.addWidget(self.to_original)
        buttons.addWidget(self.to_folder)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        right_box.addLayout(buttons)
        right_box.addWidget(self.progress)
        right_box.addWidget(self.status)
        right_box.addWidget(self.summary)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([330, 570])
        outer = QVBoxLayout(self)
        outer.addWidget(splitter)
        self._show_state()

    # -- state ---------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def _show_state(self) -> None:
        chosen = self.model.chosen
        incremental = chosen is not None and chosen.incremental
        self.note.setText(self.model.note())
        self.search.setEnabled(incremental and not self.busy)
        self.files.setEnabled(incremental and not self.busy)
        self.selection.setText(self.model.selection_text())
        ready = self.model.can_restore() and not self.busy
        self.to_original.setEnabled(ready)
        self.to_folder.setEnabled(ready)
        self.keep_both.setEnabled(not self.busy)
        self.replace.setEnabled(not self.busy)
        self.backups.setEnabled(not self.busy)
        self.cancel_button.setVisible(self.busy)
        self.progress.setVisible(self.busy)

    def _source_or_say(self) -> RestoreSource | None:
        source = self._source()
        if source is None:
            self.status.setText("Connect this computer to a BackApp server first (Settings…).")
        return source

    # -- the backups ---------------------------------------------------------------------------------

    def load_backups(self) -> None:
        """List the backups (off the GUI thread)."""
        source = self._source_or_say()
        if source is None:
            return
        self.status.setText("Looking for backups…")
        run_task(source.backups, self._backups_loaded, self._failed("list the backups"), self._pool)

    def _backups_loaded(self, result: object) -> None:
        self.model.set_backups(cast(list[BackupChoice], result))
        self.backups.clear()
        groups = self.model.grouped()
        for name, backups in groups:
            group = QTreeWidgetItem([name])
            group.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.backups.addTopLevelItem(group)
            for backup in backups:
                item = QTreeWidgetItem([backup.label()])
                item.setData(0, _ROW, backup)
                group.addChild(item)
            group.setExpanded(True)
        self.status.setText("" if groups else "There are no backups to restore yet.")
        self._show_state()

    def backup_items(self) -> list[QTreeWidgetItem]:
        """The backups' rows, in the order shown."""
        out: list[QTreeWidgetItem] = []
        for group in _children(self.backups.invisibleRootItem()):
            out += _children(group)
        return out

    def _backup_chosen(self) -> None:
        items = self.backups.selectedItems()
        backup = items[0].data(0, _ROW) if items else None
        if not isinstance(backup, BackupChoice) or backup == self.model.chosen:
            return
        previous = self.model.chosen
        # Another backup of the same configuration opens at the same folders: the way to see a
        # folder as it was at another backup.
        same_config = previous is not None and previous.config_id == backup.config_id
        self._reopen = self._expanded_paths() if same_config and not self.search.text() else set()
        self.model.choose(backup)
        self._search_serial += 1  # a search still running is for the other backup
        self.files.clear()
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.summary.clear()
        self._show_state()
        if backup.incremental:
            self._load_folder(None)

    # -- the files -----------------------------------------------------------------------------------

    def _load_folder(self, item: QTreeWidgetItem | None) -> None:
        source = self._source_or_say()
        chosen = self.model.chosen
        if source is None or chosen is None:
            return
        path = ""
        if item is not None:
            path = cast(FileRow, item.data(0, _ROW)).path
            item.setData(0, _LOADED, True)
        backup_id, agent_id = chosen.id, chosen.agent_id
        self.status.setText("Reading the backup’s folders…")

        def loaded(result: object) -> None:
            if self.model.chosen is None or self.model.chosen.id != backup_id:
                return  # another backup was chosen meanwhile
            self.status.setText("")
            rows = cast(list[FileRow], result)
            if item is None:
                self.files.clear()
            else:
                item.takeChildren()
            items = self._add_page(item, rows, 0)
            for child in items:
                if cast(FileRow, child.data(0, _ROW)).path in self._reopen:
                    self.files.expandItem(child)  # loads it in turn

        run_task(
            lambda: source.folder(backup_id, path, agent_id),
            loaded,
            self._failed("read this folder of the backup"),
            self._pool,
        )

    def _add_page(
        self, parent: QTreeWidgetItem | None, rows: list[FileRow], start: int
    ) -> list[QTreeWidgetItem]:
        """Show ``rows[start:start + PAGE]`` under ``parent`` (the top level when ``None``), and
        a last row that shows the next page when double-clicked, if there is one."""
        items = [_file_item(r) for r in rows[start : start + PAGE]]
        left = len(rows) - start - len(items)
        shown: list[QTreeWidgetItem] = list(items)
        if left > 0:
            more = QTreeWidgetItem(
                [f"… {left:,} more in this folder: double-click to show {min(left, PAGE):,} more"]
            )
            more.setData(0, _MORE, (rows, start + PAGE))
            more.setFlags(Qt.ItemFlag.ItemIsEnabled)  # not selectable: it is not a file
            shown.append(more)
        if parent is None:
            self.files.addTopLevelItems(shown)
        else:
            parent.addChildren(shown)
        return items

    def show_more(self, more: QTreeWidgetItem) -> bool:
        """Replace a folder's *more* row by its next page; ``False`` for any other row."""
        data = more.data(0, _MORE)
        if not data:
            return False
        rows, start = data
        parent = more.parent()
        if parent is None:
            self.files.takeTopLevelItem(self.files.indexOfTopLevelItem(more))
        else:
            parent.removeChild(more)
        self._add_page(parent, rows, start)
        return True

    def _expanded_paths(self) -> set[str]:
        out: set[str] = set()
        stack = _children(self.files.invisibleRootItem())
        while stack:
            item = stack.pop()
            row = item.data(0, _ROW)
            if item.isExpanded() and isinstance(row, FileRow):
                out.add(row.path)
                stack += _children(item)
        return out

    def _expanded(self, item: QTreeWidgetItem) -> None:
        if not item.data(0, _LOADED):
            self._load_folder(item)

    def find_item(self, path: str) -> QTreeWidgetItem | None:
        """The loaded row of ``path`` (``home/me/a.txt``), if any."""
        stack = _children(self.files.invisibleRootItem())
        while stack:
            item = stack.pop()
            row = item.data(0, _ROW)
            if isinstance(row, FileRow) and row.path == path:
                return item
            stack += _children(item)
        return None

    def _files_chosen(self) -> None:
        rows = [item.data(0, _ROW) for item in self.files.selectedItems()]
        self.model.selected = {r.path for r in rows if isinstance(r, FileRow)}
        self._show_state()

    def _run_search(self) -> None:
        self._search_timer.stop()
        source = self._source()
        chosen = self.model.chosen
        if source is None or chosen is None or not chosen.incremental:
            return
        text = self.search.text().strip()
        self._search_serial += 1
        serial = self._search_serial
        if not text:
            self._load_folder(None)
            return
        backup_id, agent_id = chosen.id, chosen.agent_id
        self.status.setText(f"Searching for “{text}”…")

        def found(result: object) -> None:
            if serial != self._search_serial:
                return  # a newer search, or another backup
            rows = cast(list[FileRow], result)
            self.files.clear()
            for row in rows:
                item = _file_item(row, full_path=True)
                self.files.addTopLevelItem(item)
            more = (
                " (the first ones; type more of the name)"
                if len(rows) >= MAX_SEARCH_RESULTS
                else ""
            )
            self.status.setText(
                f"{len(rows):,} match{'es' if len(rows) != 1 else ''} for “{text}”{more}."
            )

        run_task(
            lambda: source.search(backup_id, text, lambda: serial == self._search_serial, agent_id),
            found,
            self._failed("search"),
            self._pool,
        )

    # -- restoring -----------------------------------------------------------------------------------

    def _replace_toggled(self, on: bool) -> None:
        self.model.replace = on

    def _restore_to_folder(self) -> None:
        folder = self._choose_folder(self)
        if folder:
            self.start_restore(Path(folder))

    def start_restore(self, target: Path | None) -> bool:
        """Restore the chosen paths (everything of a full backup) into ``target``, or to their
        original location when ``None``; ``False`` if there is nothing to restore or one runs."""
        source = self._source_or_say()
        chosen = self.model.chosen
        if source is None or chosen is None or self.busy or not self.model.can_restore():
            return False
        worker = RestoreWorker(source, chosen, self.model.options(target))
        worker.signals.progress.connect(self._progress)
        worker.signals.finished.connect(self._finished)
        worker.signals.failed.connect(self._restore_failed)
        worker.signals.cancelled.connect(self._cancelled)
        self.worker = worker
        self.summary.clear()
        self.progress.setValue(0)
        self.status.setText(
            "Reading the whole archive…" if not chosen.incremental else "Restoring…"
        )
        self._show_state()
        self.busy_changed.emit(True)
        self._pool.start(worker)
        return True

    def cancel_restore(self) -> None:
        if self.worker is not None:
            self.worker.cancel.cancel("cancelled by the user")
            self.status.setText("Stopping…")

    def _progress(self, event: object) -> None:
        progress = cast(RestoreProgress, event)
        total = progress.size or 1
        done = (
            progress.bytes_written
            if self.model.chosen and self.model.chosen.incremental
            else (progress.bytes_downloaded)
        )
        self.progress.setValue(int(1000 * min(done, total) / total))
        self.status.setText(progress_text(progress))

    def _end(self, text: str, summary: str = "") -> None:
        self.worker = None
        self.status.setText(text)
        self.summary.setPlainText(summary)
        self._show_state()
        self.busy_changed.emit(False)
        self.restore_done.emit(summary or text)

    def _finished(self, result: object) -> None:
        outcome = cast(RestoreResult, result)
        self._end("Restore finished.", summary_text(outcome))

    def _restore_failed(self, message: str) -> None:
        self._end(f"The restore did not finish. {message}")
        self._ask_code_if_needed()

    def _cancelled(self) -> None:
        self._end("The restore was cancelled. Files already restored stay where they are.")

    def _failed(self, what: str) -> Callable[[str], None]:
        def say(message: str) -> None:
            self.status.setText(f"Could not {what}. {message}")
            self._ask_code_if_needed()

        return say

    # -- the recovery code ---------------------------------------------------------------------------

    def _ask_code_if_needed(self) -> None:
        """When a backup's key is not on this computer (or the code typed was wrong), ask for the
        recovery code; with it, open the chosen backup again. Nothing is written before."""
        source = self._source()
        if source is None or source.code_problem is None or self.code_dialog is not None:
            return
        dialog = RecoveryCodeDialog(source.code_problem, self)
        self.code_dialog = dialog

        def answered(ok: bool) -> None:
            self.code_dialog = None
            code = dialog.code()
            dialog.deleteLater()
            if not ok or not code.strip():
                return
            source.set_recovery_code(code)
            if self.model.chosen is not None and self.model.chosen.incremental:
                self.files.clear()
                self._load_folder(None)

        dialog.finished.connect(lambda result: answered(result == QDialog.DialogCode.Accepted))
        dialog.open()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        # The code is kept only while the window is open (a restore may still be running).
        source = self._source()
        if source is not None and source.recovery_code is not None and not self.busy:
            source.set_recovery_code(None)
        super().closeEvent(event)


def _children(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
    found = (item.child(i) for i in range(item.childCount()))
    return [child for child in found if child is not None]


def _file_item(row: FileRow, *, full_path: bool = False) -> QTreeWidgetItem:
    item = QTreeWidgetItem(["/" + row.path if full_path else row.name, row.size, row.modified])
    item.setData(0, _ROW, row)
    item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if row.is_dir and not full_path:
        item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
    return item
