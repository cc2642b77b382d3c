"""The recovery step after pairing (docs/recovery.md): make the account's recovery code, show it
once with the plain warning, and have the person type one group back before it is put away; or,
when the account has a code and this machine replaces an old one, continue that machine's
backups with the code. A wrong code says so and changes nothing."""

from __future__ import annotations

from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtGui import QCloseEvent, QFont
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop_agent.engine import LOSS_WARNING, Continued, Issued

from .._recovery import RecoveryOffer, RecoverySource, confirm_group, group_matches
from .._text import redact
from .._workers import run_task

__all__ = ["RecoveryCodeDialog", "RecoveryWindow"]

_ERROR = "color: #b71c1c"


def _label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label


class RecoveryWindow(QWidget):
    """One window, a page at a time: *create* (why, and the button), *show* (the code once, the
    warning), *confirm* (type group N back), *continue* (an old machine, the code), *state*
    (set up already, nothing to do: opened from the menu), *done*."""

    finished = Signal()

    def __init__(
        self, source: RecoverySource, offer: RecoveryOffer, pool: QThreadPool | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.offer = offer
        self.pool = pool
        self._code = ""
        self._group = 0
        self.setWindowTitle("BackApp — recovery code")
        self.setMinimumWidth(520)
        self.pages = QStackedWidget()

        # create
        self.create_page = QWidget()
        self.create_button = QPushButton("Create my recovery code")
        self.create_button.setDefault(True)
        self.create_button.clicked.connect(self.create_code)
        self.later_button = QPushButton("Not now")
        self.later_button.clicked.connect(self.close)
        self.create_message = _label()
        layout = QVBoxLayout(self.create_page)
        layout.addWidget(
            _label(
                "Your backups are encrypted on this computer. A recovery code gets them back if "
                "this computer is lost or its keychain is wiped. BackApp shows it only once: "
                "write it down or keep it in a password manager."
            )
        )
        layout.addWidget(self.create_message)
        layout.addLayout(_buttons(self.later_button, self.create_button))

        # show
        self.show_page = QWidget()
        self.code_label = QLabel("")
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        font.setPointSize(14)
        self.code_label.setFont(font)
        self.code_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning = _label(LOSS_WARNING)
        self.warning.setStyleSheet("font-weight: bold")
        self.saved_button = QPushButton("I have saved it")
        self.saved_button.setDefault(True)
        self.saved_button.clicked.connect(self._ask_group)
        layout = QVBoxLayout(self.show_page)
        layout.addWidget(_label("Your recovery code (shown only this once):"))
        layout.addWidget(self.code_label)
        layout.addWidget(self.warning)
        layout.addLayout(_buttons(self.saved_button))

        # confirm
        self.confirm_page = QWidget()
        self.confirm_prompt = _label()
        self.group_field = QLineEdit()
        self.group_field.returnPressed.connect(self.confirm)
        self.back_button = QPushButton("Show the code again")
        self.back_button.clicked.connect(lambda: self.pages.setCurrentWidget(self.show_page))
        self.confirm_button = QPushButton("Confirm")
        self.confirm_button.clicked.connect(self.confirm)
        self.confirm_message = _label()
        layout = QVBoxLayout(self.confirm_page)
        layout.addWidget(self.confirm_prompt)
        layout.addWidget(self.group_field)
        layout.addWidget(self.confirm_message)
        layout.addLayout(_buttons(self.back_button, self.confirm_button))

        # continue
        self.continue_page = QWidget()
        self.machines = QComboBox()
        for agent in offer.continuable:
            self.machines.addItem(f"{agent.name} ({agent.snapshots} snapshots)", agent.agent_id)
        self.code_field = QLineEdit()
        self.code_field.setEchoMode(QLineEdit.EchoMode.Password)
        self.code_field.setPlaceholderText("XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX")
        self.code_field.returnPressed.connect(self.continue_old)
        self.continue_button = QPushButton("Continue its backups")
        self.continue_button.setDefault(True)
        self.continue_button.clicked.connect(self.continue_old)
        self.skip_button = QPushButton("Start fresh")
        self.skip_button.clicked.connect(self.close)
        self.continue_message = _label()
        layout = QVBoxLayout(self.continue_page)
        layout.addWidget(
            _label(
                "This computer replaces another one. With the account's recovery code it can "
                "continue that computer's backups: its first backup then uploads only what "
                "differs, and the old backups stay restorable here."
            )
        )
        layout.addWidget(self.machines)
        layout.addWidget(_label("Recovery code"))
        layout.addWidget(self.code_field)
        layout.addWidget(self.continue_message)
        layout.addLayout(_buttons(self.skip_button, self.continue_button))

        # state: set up already (the tray menu's Recovery Code…); the code is never shown again
        self.state_page = QWidget()
        self.state_message = _label(_state_text(offer))
        self.state_close_button = QPushButton("Close")
        self.state_close_button.setDefault(True)
        self.state_close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self.state_page)
        layout.addWidget(self.state_message)
        layout.addLayout(_buttons(self.state_close_button))

        # done
        self.done_page = QWidget()
        self.done_message = _label()
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self.done_page)
        layout.addWidget(self.done_message)
        layout.addLayout(_buttons(self.close_button))

        for page in (
            self.create_page,
            self.show_page,
            self.confirm_page,
            self.continue_page,
            self.state_page,
            self.done_page,
        ):
            self.pages.addWidget(page)
        outer = QVBoxLayout(self)
        outer.addWidget(self.pages)
        if not offer.configured:
            self.pages.setCurrentWidget(self.create_page)
        elif offer.continuable:
            self.pages.setCurrentWidget(self.continue_page)
        else:
            self.pages.setCurrentWidget(self.state_page)

    # -- creating the code ----------------------------------------------------------------------

    def create_code(self) -> None:
        self.create_button.setEnabled(False)
        self.create_message.setStyleSheet("")
        self.create_message.setText("Creating the code…")
        run_task(self.source.create, self._created, self._create_failed, self.pool)

    def _created(self, result: object) -> None:
        assert isinstance(result, Issued)
        self._code = result.code
        self.code_label.setText(result.code)
        self.pages.setCurrentWidget(self.show_page)

    def _create_failed(self, message: str) -> None:
        self.create_button.setEnabled(True)
        self.create_message.setStyleSheet(_ERROR)
        self.create_message.setText(f"No code was made: {redact(message)}")

    def _ask_group(self) -> None:
        self._group = confirm_group(self._code)
        self.confirm_prompt.setText(
            f"To check that you kept it, type group {self._group} of your code "
            f"(the {_ordinal(self._group)} group of four characters)."
        )
        self.group_field.clear()
        self.confirm_message.setText("")
        self.pages.setCurrentWidget(self.confirm_page)
        self.group_field.setFocus()

    def confirm(self) -> None:
        if not group_matches(self._code, self._group, self.group_field.text()):
            self.confirm_message.setStyleSheet(_ERROR)
            self.confirm_message.setText(
                "That is not the group of your code. Look at what you saved, or show the code "
                "again."
            )
            return
        self._forget_code()
        if self.offer.continuable:
            self.continue_message.setText("")
            self.pages.setCurrentWidget(self.continue_page)
            return
        self._done("Recovery is set up. Keep the code safe: BackApp will not show it again.")

    def _forget_code(self) -> None:
        self._code = ""
        self.code_label.setText("")
        self.group_field.clear()

    # -- continuing an old machine --------------------------------------------------------------

    def continue_old(self) -> None:
        code = self.code_field.text()
        agent_id = self.machines.currentData()
        if not code.strip() or not agent_id:
            self.continue_message.setStyleSheet(_ERROR)
            self.continue_message.setText("Type the account's recovery code.")
            return
        self.continue_button.setEnabled(False)
        self.continue_message.setStyleSheet("")
        self.continue_message.setText("Checking the code…")
        run_task(
            lambda: self.source.continue_from(code, str(agent_id)),
            self._continued,
            self._continue_failed,
            self.pool,
        )

    def _continued(self, result: object) -> None:
        assert isinstance(result, Continued)
        self.code_field.clear()
        name = result.from_agent_name or result.from_agent_id
        self._done(
            f"This computer continues the backups of “{name}”. Its first backup uploads only "
            "what differs; the old backups stay restorable here."
        )

    def _continue_failed(self, message: str) -> None:
        self.continue_button.setEnabled(True)
        self.code_field.clear()
        self.continue_message.setStyleSheet(_ERROR)
        said = redact(message)
        if said.startswith("wrong recovery code"):
            said = "Wrong recovery code"  # the rest ("not the current code…") adds nothing
        self.continue_message.setText(f"{said[:1].upper()}{said[1:]}. Nothing was changed.")

    def _done(self, text: str) -> None:
        self.done_message.setText(text)
        self.pages.setCurrentWidget(self.done_page)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self._forget_code()
        self.code_field.clear()
        self.finished.emit()
        super().closeEvent(event)


def _state_text(offer: RecoveryOffer) -> str:
    """What the window says when recovery is set up and there is nothing to continue."""
    covered = (
        "This computer's backups are covered by it."
        if offer.key_wrapped
        else "This computer's backups will be covered by it after its next backup."
    )
    return (
        f"Recovery is set up for this account. {covered} BackApp never shows the code again: "
        "keep the one you saved. To issue a new code (the old one then stops working), run "
        "“backapp-agent recovery rotate --recovery-code-stdin” with the current one."
    )


def _buttons(*buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addStretch(1)
    for button in buttons:
        row.addWidget(button)
    return row


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


class RecoveryCodeDialog(QDialog):
    """Asks for the account's recovery code when a backup's key is not on this computer (a
    machine this one replaces made it, or the keychain lost this one's). ``reason`` says why (or
    that the code typed was wrong); ``code()`` is read once, on *Open*."""

    def __init__(self, reason: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("BackApp — recovery code")
        self.setMinimumWidth(480)
        self.reason = _label(reason)
        if reason.startswith(("Wrong", "Not a valid")):
            self.reason.setStyleSheet(_ERROR)
        self.field = QLineEdit()
        self.field.setEchoMode(QLineEdit.EchoMode.Password)
        self.field.setPlaceholderText("XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel
        )
        self.open_button = buttons.button(QDialogButtonBox.StandardButton.Open)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.reason)
        layout.addWidget(_label("Recovery code"))
        layout.addWidget(self.field)
        layout.addWidget(buttons)

    def code(self) -> str:
        """The code typed, cleared from the field as it is read."""
        text = self.field.text()
        self.field.clear()
        return text
