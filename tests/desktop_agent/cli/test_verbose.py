"""``-v``/``-vv`` are accepted by every ``backapp-agent`` command, before or after its name, as the
docs say ("Every command accepts -v")."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from desktop_agent.cli import build_parser, main

#: The fewest arguments each command needs to parse.
REQUIRED: dict[str, list[str]] = {
    "restore": ["0d9c4a43-9d7c-4f5e-a3b1-6f1f1f0c0c0c"],
    "ls": ["0d9c4a43-9d7c-4f5e-a3b1-6f1f1f0c0c0c"],
    "drill": ["--config", "0d9c4a43-9d7c-4f5e-a3b1-6f1f1f0c0c0c"],
    "recovery": ["status"],
    "pair": ["K7Q-4MX-P2D"],
}


def commands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("backapp-agent has no commands")


def test_every_command_is_covered() -> None:
    assert set(commands()) == {
        "configure",
        "pair",
        "run",
        "daemon",
        "status",
        "backups",
        "restore",
        "snapshots",
        "ls",
        "check",
        "drill",
        "compact",
        "recovery",
        "update",
    }


@pytest.mark.parametrize("name", sorted(commands()))
@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ([], 0),
        (["-v"], 1),
        (["-vv"], 2),
        (["--verbose"], 1),
        (["-v", "-v"], 2),
    ],
)
def test_every_command_takes_v_after_its_name(name: str, flags: list[str], level: int) -> None:
    args = build_parser().parse_args([name, *REQUIRED.get(name, []), *flags])
    from desktop_agent.cli.common import verbosity

    assert verbosity(args) == level


@pytest.mark.parametrize("name", sorted(commands()))
def test_v_before_and_after_the_command_add_up(name: str) -> None:
    args = build_parser().parse_args(["-v", name, *REQUIRED.get(name, []), "-v"])
    from desktop_agent.cli.common import verbosity

    assert verbosity(args) == 2


def test_status_v_logs_at_info(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The new user's command: accepted (not a usage error), and the log level is INFO."""
    monkeypatch.setenv("BACKAPP_AGENT_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("BACKAPP_AGENT_SERVER_URL", raising=False)
    seen: list[int] = []
    monkeypatch.setattr(
        "desktop_agent.cli.setup_logging", lambda level: seen.append(level), raising=True
    )
    plain = main(["status"])  # not configured: says so, not a usage error
    assert main(["status", "-v"]) == plain
    assert seen == [0, 1]
