"""``backapp-agent`` in-process against the in-memory BackApp (``httpx.Client`` gets its
transport), with the settings folder in the test's own directory."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import keyring
import pytest
from keyring.backends import fail

from desktop_agent import cli
from tests.support.fakes import API_KEY, FakeBackApp

SERVER = "https://backapp.test"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeBackApp:
    fake = FakeBackApp()
    real_client = httpx.Client

    def client(*args: Any, **kw: Any) -> httpx.Client:
        kw["transport"] = fake.transport
        return real_client(*args, **kw)

    monkeypatch.setattr(httpx, "Client", client)
    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())  # type: ignore[no-untyped-call]
    monkeypatch.setenv("BACKAPP_AGENT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("BACKAPP_AGENT_TEMP_DIR", str(tmp_path / "tmp"))
    monkeypatch.delenv("BACKAPP_AGENT_API_KEY", raising=False)
    return fake


@pytest.fixture
def configured(fake: FakeBackApp, monkeypatch: pytest.MonkeyPatch) -> FakeBackApp:
    """Paired with the fake server (``configure --api-key-stdin``)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(API_KEY + "\n"))
    assert cli.main(["configure", "--server", SERVER, "--api-key-stdin"]) == 0
    return fake


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """``cli.main`` sets up logging (levels of the root, httpx and the agent's loggers); put them
    back, so tests that run later see the levels they expect."""
    names = ("", "httpx", "httpcore", "desktop_agent", "backapp-agent")
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
