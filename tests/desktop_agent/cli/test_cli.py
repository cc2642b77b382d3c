"""``backapp-agent`` in-process, against the in-memory BackApp (httpx.Client gets the fake transport)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from desktop_agent import __version__, cli
from desktop_agent.cli.display import LiveProgress, Summary, human_bytes, human_duration
from desktop_agent.engine import (
    ArchiveProgress,
    BackupFailed,
    BackupFinished,
    ConfigStarted,
    FileFailed,
)
from tests.support.fakes import API_KEY, FakeBackApp, config, configure

SERVER = "https://backapp.test"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"backapp-agent {__version__}\n"


def test_configure_stores_settings_and_key(
    fake: FakeBackApp,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert configure(monkeypatch, API_KEY, "--poll-interval", "60", "--agent-id", "a1") == 0
    out, err = capsys.readouterr()
    assert "the key works" in out and "no usable OS keychain" in err and API_KEY not in out + err
    settings = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert settings["serverUrl"] == SERVER and settings["pollInterval"] == 60000
    assert settings["agentId"] == "a1" and "apiKey" not in settings
    key_file = tmp_path / "cfg" / "api-key"
    assert key_file.read_text().strip() == API_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert fake.heartbeats == 1


def test_configure_sets_and_removes_bandwidth_limits(
    fake: FakeBackApp,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert configure(monkeypatch, API_KEY, "--limit-upload", "10", "--limit-download", "2.5") == 0
    assert "limited to 10 Mbit/s" in capsys.readouterr().out
    settings = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert (settings["limitUpload"], settings["limitDownload"]) == (10, 2.5)
    assert configure(monkeypatch, "", "--limit-upload", "0") == 0  # empty key: keep the stored one
    settings = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert "limitUpload" not in settings and settings["limitDownload"] == 2.5
    with pytest.raises(SystemExit) as info:
        configure(monkeypatch, API_KEY, "--limit-upload", "fast")
    assert info.value.code == 2 and "not a number of Mbit/s" in capsys.readouterr().err


def test_configure_refuses_a_wrong_key_and_saves_nothing(
    fake: FakeBackApp,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert configure(monkeypatch, "bka_wrong") == 1
    assert "refused this API key" in capsys.readouterr().err
    assert not (tmp_path / "cfg").exists()


def test_the_key_is_never_an_argument(
    fake: FakeBackApp, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["configure", "--server", SERVER, "--api-key", "bka_x"],
        ["configure", "--api-key=bka_x"],
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        assert "never taken from the command line" in capsys.readouterr().err


def test_configure_without_a_terminal_needs_stdin_flag(
    fake: FakeBackApp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["configure", "--server", SERVER]) == 2
    assert "--api-key-stdin" in capsys.readouterr().err


def test_run_json_then_status(
    fake: FakeBackApp,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    fake.configs = [config("c1", str(src)), config("c2", str(tmp_path / "missing"))]
    assert configure(monkeypatch) == 0
    capsys.readouterr()

    assert cli.main(["run", "--json"]) == 1  # c2 failed
    out = capsys.readouterr().out
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    finished = next(e for e in events if e["event"] == "backup_finished")
    assert finished["configId"] == "c1" and finished["filename"].startswith("backup-")
    failed = next(e for e in events if e["event"] == "backup_failed")
    assert failed["configId"] == "c2" and failed["reason"].startswith("Source folder not found: ")
    assert events[-1]["completed"] == 1 and events[-1]["failed"] == 1

    assert cli.main(["run", "--config", "c1"]) == 0
    assert cli.main(["status"]) == 0
    text = capsys.readouterr().out
    assert "Connection: online" in text and "completed" in text and "FAILED" in text
    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["connection"]["ok"] is True
    assert {c["id"]: c["lastResult"]["status"] for c in report["configs"]} == {
        "c1": "completed",
        "c2": "failed",
    }


def test_file_errors_give_exit_status_3(
    fake: FakeBackApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    (src / "gone.txt").write_text("gone")
    fake.configs = [config("c1", str(src))]
    assert configure(monkeypatch) == 0
    real_open = __import__("os").open

    def vanish(path: Any, flags: int, *a: Any) -> int:
        if __import__("os").fsdecode(path).endswith("gone.txt"):  # the engine passes bytes
            raise FileNotFoundError(2, "No such file", str(path))
        fd: int = real_open(path, flags, *a)
        return fd

    monkeypatch.setattr("os.open", vanish)
    assert cli.main(["run"]) == 3


def test_run_unconfigured(fake: FakeBackApp, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run"]) == 2
    assert "configure" in capsys.readouterr().err


def test_key_from_the_environment(
    fake: FakeBackApp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKAPP_AGENT_SERVER_URL", SERVER)
    monkeypatch.setenv("BACKAPP_AGENT_API_KEY", API_KEY)
    assert cli.main(["run"]) == 0
    assert "No backup configs" in capsys.readouterr().out


def test_status_when_the_server_is_down(
    fake: FakeBackApp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert configure(monkeypatch) == 0
    capsys.readouterr()
    fake.faults = lambda request: httpx.ConnectError("refused")
    assert cli.main(["status"]) == 1
    assert "Connection: FAILED" in capsys.readouterr().out


def test_human_formats() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
    ]
    assert [human_duration(s) for s in (None, 0, 83, 3725)] == [
        "--:--",
        "0:00:00",
        "0:01:23",
        "1:02:05",
    ]


def test_terminal_displays() -> None:
    out = io.StringIO()
    live = LiveProgress(out)
    live(ConfigStarted(config_id="c", config_name="Daily", sources=("/x",)))
    live(
        ArchiveProgress(
            config_id="c",
            files_done=5,
            files_total=10,
            bytes_done=1024,
            bytes_total=2048,
            archive_bytes=100,
            rate=512.0,
            eta=2.0,
        )
    )
    live(FileFailed(config_id="c", path="/x/y", message="vanished"))
    live(
        BackupFinished(
            config_id="c",
            config_name="Daily",
            log_id="l",
            filename="backup.tar.gz",
            files=10,
            bytes=2048,
            archive_size=100,
            sha256="s",
            duration_ms=1500,
            rate=1.0,
            errors=1,
        )
    )
    text = out.getvalue()
    assert "Daily: 5/10 files  1.0 KiB/2.0 KiB  512 B/s  ETA 0:00:02" in text
    assert "warning: '/x/y': vanished" in text
    assert (
        "WARN   Daily: 10 files, 2.0 KiB -> backup.tar.gz (100 B) in 1.5 s, 1 file error(s)" in text
    )
    plain = io.StringIO()
    Summary(plain)(
        BackupFailed(config_id="c", config_name="Daily", log_id=None, reason="boom", duration_ms=1)
    )
    assert plain.getvalue() == "FAILED Daily: boom\n"


def test_an_outage_is_said_once_not_at_every_try(capsys: pytest.CaptureFixture[str]) -> None:
    from desktop_agent.cli.display import daemon_display
    from desktop_agent.engine import UploadResumed, UploadWaiting

    def waiting(retry: int) -> UploadWaiting:
        return UploadWaiting(
            config_id="c",
            waiting_for="storage",
            reason="upload to https://s3.test/k stalled: the storage took no data for 60 s",
            waited=float(retry * 10),
            retry_in=10.0,
            gives_up_in=590.0 - retry * 10,
        )

    plain = io.StringIO()
    summary = Summary(plain)
    summary(ConfigStarted(config_id="c", config_name="Daily", sources=("/x",)))
    for retry in range(5):
        summary(waiting(retry))
    summary(UploadResumed(config_id="c", waited=47.0))
    summary(waiting(0))
    assert plain.getvalue().splitlines() == [
        "  waiting for storage: upload to https://s3.test/k stalled: the storage took no data "
        "for 60 s (retrying for up to 0:10:00)",
        "  the upload goes on after waiting 0:00:47",
        "  waiting for storage: upload to https://s3.test/k stalled: the storage took no data "
        "for 60 s (retrying for up to 0:10:00)",
    ]
    daemon = daemon_display(False)
    for retry in range(3):
        daemon(waiting(retry))
    daemon(UploadResumed(config_id="c", waited=47.0))
    daemon(waiting(0))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("waiting for storage: upload to" in line for line in lines)
