"""``backapp-agent configure --parallel-backups N``: stored, shown, and refused in words outside 1-4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.desktop_agent.cli.test_cli import configure, fake  # noqa: F401 - the fixture
from tests.support.fakes import API_KEY, FakeBackApp


def test_configure_sets_parallel_backups(
    fake: FakeBackApp,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert configure(monkeypatch, API_KEY, "--parallel-backups", "3") == 0
    assert "up to 3 configs backed up at the same time" in capsys.readouterr().out
    settings = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert settings["parallelBackups"] == 3
    assert configure(monkeypatch, "", "--parallel-backups", "1") == 0  # the default: left out
    settings = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert "parallelBackups" not in settings
    for bad, words in (
        ("0", "between 1 and 4, not 0"),
        ("5", "between 1 and 4, not 5"),
        ("two", "not a whole number: 'two'"),
    ):
        with pytest.raises(SystemExit) as info:
            configure(monkeypatch, API_KEY, "--parallel-backups", bad)
        assert info.value.code == 2 and words in capsys.readouterr().err
    settings = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert "parallelBackups" not in settings  # nothing changed
