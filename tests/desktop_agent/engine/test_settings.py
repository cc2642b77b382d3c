"""config.json and environment overrides."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from desktop_agent.engine import (
    AgentSettings,
    ConfigurationError,
    config_dir,
    load_settings,
    save_settings,
)

MIB = 1024 * 1024


def test_config_dir_override(tmp_path: Path) -> None:
    assert config_dir({"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)}) == tmp_path
    assert config_dir({}).name == "backapp-agent"


def test_round_trip_keeps_the_spec_fields_and_unknown_keys(tmp_path: Path) -> None:
    env = {"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)}
    (tmp_path / "config.json").write_text(json.dumps({"guiTheme": "dark"}))
    settings = AgentSettings(
        server_url="https://backapp.example.org",
        agent_id="a1",
        poll_interval_ms=60_000,
        temp_dir=tmp_path / "tmp",
        part_size=32 * MIB,
    )
    path = save_settings(settings, env)
    data = json.loads(path.read_text())
    assert data == {
        "serverUrl": "https://backapp.example.org",
        "agentId": "a1",
        "pollInterval": 60000,
        "tempDir": str(tmp_path / "tmp"),
        "partSize": 32 * MIB,
        "guiTheme": "dark",
    }
    assert "apiKey" not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_settings(env) == settings


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "BACKAPP_AGENT_CONFIG_DIR": str(tmp_path),
        "BACKAPP_AGENT_SERVER_URL": "http://127.0.0.1:8000",
        "BACKAPP_AGENT_PART_SIZE": "5MiB",
        "BACKAPP_AGENT_MULTIPART_THRESHOLD": "6M",
        "BACKAPP_AGENT_UPLOAD_CONCURRENCY": "2",
        "BACKAPP_AGENT_EXCLUDE_NODE_MODULES": "yes",
    }
    save_settings(AgentSettings(server_url="https://elsewhere.example"), env)
    settings = load_settings(env)
    assert settings.server_url == "http://127.0.0.1:8000"
    assert (settings.part_size, settings.multipart_threshold) == (5 * MIB, 6 * MIB)
    assert settings.upload_concurrency == 2 and settings.exclude_node_modules is True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"partSize": 1024}, "at least 5 MiB"),
        ({"serverUrl": "ftp://x"}, "http"),
        ({"gzipLevel": 12}, "gzipLevel"),
        ({"pollInterval": "soon"}, "pollInterval"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, content: dict[str, object], message: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(content))
    with pytest.raises(ConfigurationError, match=message):
        load_settings({"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)})


def test_broken_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ConfigurationError, match="cannot read .*config.json"):
        load_settings({"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)})
