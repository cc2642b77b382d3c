"""What the tray and the status window say about configs that have never completed a backup, and
about a backup the user cancelled: a config with no completed backup is never "up to date", and a
cancel is neither a failure nor a success."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from desktop_agent.engine import BackupFailed, ConfigInfo, KeyStore, Source, StateStore
from desktop_agent.engine.protocol import BackupResult, RunResult
from desktop_agent.gui import ConfigView, Health
from desktop_agent.gui._status import Status, last_result_text
from tests.support.tray import close_app, make_app, pair

SERVER = "http://127.0.0.1:9"  # nothing listens: these tests never start polling
KEY = "bka_" + "h" * 43


def configs(*names: str) -> list[ConfigInfo]:
    return [ConfigInfo(id=f"c{i}", name=n, sources=[Source("/x")]) for i, n in enumerate(names)]


def test_right_after_pairing_configs_never_run_need_attention(
    qtbot: Any, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        c = app.controller
        c.status.connected(configs("Documents", "Photos", "Code"))
        c.changed.emit()
        assert c.health() is Health.ATTENTION
        assert c.attention_reasons() == [
            "Code: not backed up yet",
            "Documents: not backed up yet",
            "Photos: not backed up yet",
        ]
        app.status.refresh()
        assert app.status.headline.text() == "Needs attention"
        assert "up to date" not in app.status.headline.text()
        assert "Documents: not backed up yet" in app.status.connection.text()
        assert app.menu.actions["header"].text() != "All backups up to date"
    finally:
        close_app(app)


def test_without_configs_there_is_nothing_to_be_late_for(
    qtbot: Any, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.controller.status.connected([])
        assert app.controller.health() is Health.IDLE
    finally:
        close_app(app)


def _result(status: str, finished: datetime, error: str | None = None) -> BackupResult:
    return BackupResult(
        config_id="c0",
        config_name="Documents",
        status=status,  # type: ignore[arg-type]
        error=error,
        finished_at=finished.isoformat(timespec="seconds"),
        size=2048,
    )


def test_a_cancel_keeps_the_last_good_backup_and_raises_nothing(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store = StateStore(tmp_path)
    store.record(RunResult((_result("completed", now - timedelta(hours=2)),)))
    store.record(RunResult((_result("cancelled", now, "cancelled by the user"),)))

    status = Status()
    status.load_results(store.load())
    view = status.views["c0"]
    assert last_result_text(view, now) == "Cancelled just now (last good backup 2 h ago)"
    assert not view.last_failed
    assert status.attention_reasons(now) == []


def test_a_cancelled_first_backup_is_still_not_backed_up(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    status = Status()
    status.apply_configs(configs("Documents"))
    status.apply(
        BackupFailed(
            config_id="c0",
            config_name="Documents",
            log_id=None,
            reason="cancelled by the user",
            duration_ms=5,
            cancelled=True,
        )
    )
    view = status.views["c0"]
    assert not view.last_failed
    assert last_result_text(view, now) == "Cancelled just now (never backed up)"
    assert status.attention_reasons(now) == ["Documents: not backed up yet"]


def test_overdue_counts_from_the_last_completed_backup_not_the_last_attempt() -> None:
    now = datetime.now(UTC)
    view = ConfigView(
        id="c0",
        name="Docs",
        last={
            "status": "cancelled",
            "finishedAt": now.isoformat(),
            "lastCompletedAt": (now - timedelta(hours=30)).isoformat(),
        },
    )
    status = Status()
    status.views["c0"] = view
    assert status.attention_reasons(now) == ["Docs: no backup for more than 24 hours"]
