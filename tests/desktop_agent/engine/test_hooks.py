"""A config's pre- and post-commands (real shell commands, no server) and the volume-snapshot seam
(recorded command outputs: VSS and APFS cannot run here)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from desktop_agent.engine._errors import ConfigurationError
from desktop_agent.engine._hooks import CommandFailed, ConfigCommands, run_command
from desktop_agent.engine._volume import ApfsSnapshot, VssSnapshot, refuse_snapshot, snapshot_for
from desktop_agent.engine.protocol import BackupOptions, ConfigInfo, Source

Logged = list[tuple[str, str, dict[str, object]]]


def config(**options: Any) -> ConfigInfo:
    return ConfigInfo(
        id="c1", name="Home", sources=[Source("/home/me")], options=BackupOptions(**options)
    )


def commands(cfg: ConfigInfo, logged: Logged, *, allowed: bool = True) -> ConfigCommands:
    return ConfigCommands(
        cfg, allowed=allowed, send_log=lambda lvl, msg, meta: logged.append((lvl, msg, meta))
    )


def test_a_failing_pre_command_stops_with_its_output(tmp_path: Path) -> None:
    logged: Logged = []
    post = tmp_path / "post"
    hooks = commands(
        config(pre_command="echo 'no space left' >&2; exit 3", post_command=f"touch {post}"),
        logged,
    )
    with pytest.raises(CommandFailed, match="exit status 3; its output: no space left"):
        hooks.before()
    hooks.after("failed")
    assert not post.exists()
    [(level, message, meta)] = logged
    assert level == "error" and "The preCommand of 'Home' failed" in message
    assert meta["exitCode"] == 3 and "no space left" in str(meta["output"])


def test_the_post_command_runs_after_a_good_pre_command_with_the_status(tmp_path: Path) -> None:
    logged: Logged = []
    out = tmp_path / "status"
    hooks = commands(
        config(
            pre_command='test "$BACKAPP_CONFIG_ID" = c1',
            post_command=f'printf %s "$BACKAPP_BACKUP_STATUS" > {out}; exit 1',
        ),
        logged,
    )
    hooks.before()
    hooks.after("completed")  # a failing post-command is a warning, never an exception
    assert out.read_text() == "completed"
    assert [lvl for lvl, _, _ in logged] == ["info", "warning"]


def test_a_hanging_command_is_killed_at_the_timeout_with_what_it_started() -> None:
    t0 = time.monotonic()
    result = run_command("sleep 30 & echo started; wait", timeout=1, env={})
    assert time.monotonic() - t0 < 10
    assert result.timed_out and not result.ok and "started" in result.output
    hooks = commands(config(pre_command="sleep 30", command_timeout_seconds=1), [])
    with pytest.raises(CommandFailed, match="did not finish within 1 s"):
        hooks.before()


def test_commands_do_not_run_unless_the_machine_allows_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hooks = commands(config(pre_command=f"touch {marker}"), [], allowed=False)
    with pytest.raises(ConfigurationError, match="configure --allow-server-commands"):
        hooks.before()
    assert not marker.exists()
    commands(config(), [], allowed=False).before()  # no commands: nothing to allow


def test_a_snapshot_is_refused_in_words_here() -> None:
    with pytest.raises(ConfigurationError, match="only Windows makes"):
        commands(config(snapshot="vss"), []).before()
    with pytest.raises(ConfigurationError, match="cannot back up from volume snapshots yet"):
        refuse_snapshot("apfs", platform="darwin")


class Recorder:
    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        return self.answers.pop(0) if self.answers else (0, "")


def test_vss_makes_one_shadow_per_volume_and_maps_the_sources() -> None:
    device = "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy7"
    run = Recorder((0, "{ABC-1}\r\n" + device + "\r\n"))
    vss = snapshot_for("vss", platform="win32", run=run)
    assert isinstance(vss, VssSnapshot)
    mapped = vss.create(["C:\\Users\\me\\Documents", "C:\\Projects"])
    assert mapped == {
        "C:\\Users\\me\\Documents": device + "\\Users\\me\\Documents",
        "C:\\Projects": device + "\\Projects",
    }
    assert len(run.calls) == 1 and "Win32_ShadowCopy" in run.calls[0][-1]
    vss.remove()
    assert run.calls[-1] == ["vssadmin", "delete", "shadows", "/shadow={ABC-1}", "/quiet"]
    refused = VssSnapshot(Recorder((1, "error 5")))
    with pytest.raises(ConfigurationError, match="needs an administrator"):
        refused.create(["D:\\data"])


def test_apfs_mounts_a_local_snapshot_and_removes_it() -> None:
    run = Recorder((0, "Created local snapshot with date: 2026-12-02-081500\n"), (0, ""))
    apfs = snapshot_for("apfs", platform="darwin", run=run)
    assert isinstance(apfs, ApfsSnapshot)
    mapped = apfs.create(["/Users/me/Documents"])
    assert apfs.mount is not None
    assert mapped == {"/Users/me/Documents": str(apfs.mount / "Users/me/Documents")}
    assert run.calls[1][:5] == [
        "mount_apfs",
        "-o",
        "nobrowse,ro",
        "-s",
        "com.apple.TimeMachine.2026-12-02-081500.local",
    ]
    apfs.remove()
    assert run.calls[-1] == ["tmutil", "deletelocalsnapshots", "2026-12-02-081500"]
    with pytest.raises(ConfigurationError, match="only macOS makes"):
        snapshot_for("apfs", platform="linux")
