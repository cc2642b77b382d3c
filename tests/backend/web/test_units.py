"""The web console's pure helpers, checked exactly: formatting, health rules, safe redirects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from backend.schemas import (
    AgentOut,
    BackupOut,
    ConfigLastBackups,
    ConfigOut,
    Destination,
    Options,
    Source,
)
from backend.web._auth import safe_next
from backend.web._format import (
    LogDetail,
    ago,
    compact_json,
    duration,
    filesize,
    log_details,
    parse_iso,
    platform,
    utc,
)
from backend.web._forms import ConfigForm
from backend.web._health import config_rows, config_state, verdict
from backend.web._render import make_environment

NOW = datetime(2025, 1, 8, 12, 0, 0, tzinfo=UTC)


def _iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat().replace("+00:00", "Z")


def backup(status: str, age: timedelta = timedelta(hours=1), **kw: Any) -> BackupOut:
    values = dict(
        id="b1",
        config_id="c1",
        config_name="Docs",
        agent_id="a1",
        status=status,
        s3_path="users/u/agents/a1/configs/c1/x.tar.gz",
        filename="x.tar.gz",
        filesize=None,
        size=100 if status == "completed" else None,
        sha256=None,
        files_processed=3,
        bytes_transferred=100,
        duration=1500,
        errors=[],
        error=kw.pop("error", None),
        started_at=_iso(age),
        completed_at=None if status == "running" else _iso(age),
    )
    values.update(kw)
    return BackupOut(**values)  # type: ignore[arg-type]


def agent(status: str = "online", active: bool = True, **kw: Any) -> AgentOut:
    values = dict(
        id="a1",
        name="laptop",
        status=status,
        active=active,
        platform="linux",
        version="0.1.0",
        last_seen=_iso(timedelta(minutes=1)),
        api_key_prefix="bka_abcdef",
        created_at=_iso(timedelta(days=3)),
    )
    values.update(kw)
    return AgentOut(**values)  # type: ignore[arg-type]


def config(
    mode: Literal["server", "agent"] = "agent", agent_id: str | None = "a1", name: str = "Docs"
) -> ConfigOut:
    return ConfigOut(
        id="c1",
        name=name,
        execution_mode=mode,
        agent_id=agent_id,  # type: ignore[arg-type]
        sources=[Source(path="/home/me")],
        excludes=[],
        destination=Destination(bucket="b", region="r", prefix="p"),
        options=Options(),
        created_at=_iso(timedelta(days=3)),
        updated_at=_iso(timedelta(days=3)),
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "—"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3 + 1024**3 // 2, "3.5 GiB"),
        (2 * 1024**5, "2.0 PiB"),
        (3 * 1024**6, "3072.0 PiB"),
    ],
)
def test_filesize(size: int | None, text: str) -> None:
    assert filesize(size) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "—"),
        (0, "0 ms"),
        (450, "450 ms"),
        (4500, "4.5 s"),
        (45000, "45 s"),
        (60000, "1 min"),
        (125000, "2 min 5 s"),
        (3600000, "1 h"),
        (3720000, "1 h 2 min"),
    ],
)
def test_duration(ms: int | None, text: str) -> None:
    assert duration(ms) == text


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(seconds=3), "just now"),
        (timedelta(seconds=45), "45 s ago"),
        (timedelta(minutes=3), "3 min ago"),
        (timedelta(hours=2), "2 h ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(days=3), "3 days ago"),
        (timedelta(seconds=-30), "just now"),
    ],
)
def test_ago(age: timedelta, text: str) -> None:
    assert ago(_iso(age), NOW) == text


def test_ago_and_utc_of_nothing() -> None:
    assert ago(None, NOW) == "never"
    assert utc(None) == "—" and utc("not a date") == "—"
    assert utc("2025-01-07T15:00:00.123Z") == "2025-01-07 15:00:00 UTC"
    assert parse_iso("2025-01-07T15:00:00") == datetime(2025, 1, 7, 15, tzinfo=UTC)


def test_platform_names() -> None:
    assert [platform(p) for p in ("darwin", "win32", "linux", "freebsd14", None)] == [
        "macOS",
        "Windows",
        "Linux",
        "freebsd14",
        "—",
    ]


def test_log_details_are_words_not_json() -> None:
    """An agent's log metadata as people read it: ids to link, sizes and durations in units, file
    errors one per line; JSON only for what has no better form."""
    details = log_details(
        {
            "configId": "c1",
            "logId": "l1",
            "errors": [{"path": "/home/a.txt", "message": "permission denied"}, "3 more"],
            "bytesTransferred": 300_000,
            "durationMs": 45_000,
            "filename": "b.tar.gz",
            "retryAfterSeconds": 5,
            "nested": {"a": 1},
            "empty": None,
        }
    )
    assert details == [
        LogDetail("Configuration", "config", "c1"),
        LogDetail("Backup", "backup", "l1"),
        LogDetail("File errors", "errors", lines=("/home/a.txt: permission denied", "3 more")),
        LogDetail("Bytes transferred", "text", "293.0 KiB"),
        LogDetail("Duration", "text", "45 s"),
        LogDetail("Archive", "text", "b.tar.gz"),
        LogDetail("Retry after seconds", "text", "5"),
        LogDetail("Nested", "text", '{"a": 1}'),
    ]
    assert log_details(None) == [] and log_details({}) == []
    assert log_details(["x"]) == [LogDetail("Details", "text", '["x"]')]


def test_compact_json_is_plain_text() -> None:
    assert compact_json({"path": "/x", "n": 2}) == '{"path": "/x", "n": 2}'
    assert compact_json({"v": "x" * 5000}).endswith("…")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/agents?level=error", "/agents?level=error"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("agents", "/"),
        ("/a\nb", "/"),
    ],
)
def test_safe_next(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


def test_config_state_rules() -> None:
    day = timedelta(hours=24)
    assert config_state(None, None, NOW) == "never"
    assert config_state(backup("failed"), backup("completed", timedelta(hours=2)), NOW) == "failing"
    assert config_state(backup("running"), None, NOW) == "running"
    assert config_state(backup("completed"), backup("completed"), NOW) == "ok"
    old = backup("completed", day + timedelta(minutes=1))
    assert config_state(old, old, NOW) == "overdue"
    assert config_state(old, old, NOW, overdue_after=timedelta(days=2)) == "ok"


def test_verdict_levels_and_reasons() -> None:
    assert verdict([], NOW).level == "empty"
    good = ConfigLastBackups(
        config_id="c1", last=backup("completed"), last_completed=backup("completed")
    )
    rows = config_rows([config()], [agent()], {"c1": good}, NOW)
    assert (
        verdict(rows, NOW).level == "ok"
        and verdict(rows, NOW).headline == "All backups are up to date"
    )

    failed = ConfigLastBackups(
        config_id="c1",
        last=backup("failed", error="disk on fire"),
        last_completed=backup("completed"),
    )
    v = verdict(config_rows([config()], [agent()], {"c1": failed}, NOW), NOW)
    assert v.level == "bad"
    assert [r.text for r in v.reasons] == ["“Docs”: the last backup failed 1 h ago: disk on fire"]
    assert v.reasons[0].href == "/configs/c1"

    v = verdict(config_rows([config()], [agent("offline")], {"c1": good}, NOW), NOW)
    assert v.level == "warn"
    assert v.reasons[0].text == "“Docs”: its agent “laptop” is offline (last seen 1 min ago)"

    v = verdict(config_rows([config()], [agent(active=False)], {"c1": good}, NOW), NOW)
    assert v.level == "bad" and "deactivated" in v.reasons[0].text

    v = verdict(config_rows([config(agent_id=None)], [], {}, NOW), NOW)
    assert v.level == "bad"
    assert [r.text for r in v.reasons] == [
        "“Docs” has no completed backup yet",
        "“Docs”: no agent assigned: nothing runs this configuration",
    ]

    first_run = ConfigLastBackups(config_id="c1", last=backup("running"), last_completed=None)
    rows = config_rows([config()], [agent()], {"c1": first_run}, NOW)
    assert rows[0].state == "running" and not rows[0].safe
    v = verdict(rows, NOW)
    assert v.level == "warn"
    assert [r.text for r in v.reasons] == [
        "“Docs” has no completed backup yet (the first one is running)"
    ]
    rerun = ConfigLastBackups(
        config_id="c1", last=backup("running"), last_completed=backup("completed")
    )
    rows = config_rows([config()], [agent()], {"c1": rerun}, NOW)
    assert rows[0].safe and verdict(rows, NOW).level == "ok"
    stale = backup("completed", timedelta(days=3))
    late = ConfigLastBackups(config_id="c1", last=backup("running"), last_completed=stale)
    v = verdict(config_rows([config()], [agent()], {"c1": late}, NOW), NOW)
    assert [r.text for r in v.reasons] == ["“Docs” is overdue: the last good backup was 3 days ago"]

    server = config(mode="server", agent_id=None)
    assert verdict(config_rows([server], [], {"c1": good}, NOW), NOW).level == "ok"


def test_config_form_validation_collects_every_error() -> None:
    form = ConfigForm(
        name="",
        execution_mode="agent",
        agent_id="",
        sources="  \n",
        retention_days="x",
        compression_format="lz4",
        type="differential",
    )
    assert form.validate({"a1"}) is None
    assert set(form.errors) == {
        "name",
        "agent_id",
        "sources",
        "retention_days",
        "compression_format",
        "type",
    }
    form = ConfigForm(name="Docs", execution_mode="agent", agent_id="gone", sources="/x")
    assert form.validate({"a1"}) is None and set(form.errors) == {"agent_id"}


def test_config_form_builds_the_request() -> None:
    form = ConfigForm(
        name="Docs",
        execution_mode="server",
        agent_id="a1",
        sources="/a\n\n  /b  \n",
        excludes="*.tmp\nnode_modules\n",
        compression=False,
        compression_format="zstd",
        encryption=True,
        retention_days="7",
    )
    data = form.validate({"a1"})
    assert data is not None and form.errors == {}
    assert data.agent_id is None and data.execution_mode == "server"
    assert [s.path for s in data.sources] == ["/a", "/b"]
    assert data.excludes == ["*.tmp", "node_modules"]
    assert data.options == Options(
        type="full", compression=False, encryption=True, retention_days=7, compression_format="zstd"
    )
    patch = ConfigForm.patch_from(data)
    assert patch.agent_id is None and patch.options.retention_days == 7  # type: ignore[union-attr]


def test_templates_escape_everything() -> None:
    env = make_environment()
    html = env.from_string("<p>{{ name }}</p>").render(name="<script>alert(1)</script>")
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert env.autoescape is not False
