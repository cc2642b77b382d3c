"""``backapp-agent pair`` against a real server over loopback: a fresh code pairs (the key lands in
the keychain and is never printed), a used code and an expired one say so, ten wrong codes are
rate-limited. The CLI runs in-process so the keychain is the test's own."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from backend.services import Services
from backend.services.clock import utcnow
from desktop_agent import cli
from desktop_agent.engine import load_settings
from tests.support.keyring import MemoryKeyring
from tests.support.server_process import LiveServerFactory, Owner
from tests.support.settings import make_settings
from tests.support.threaded_server import serve_in_thread


def _issue(owner: Owner, name: str = "Kitchen PC") -> str:
    r = owner.request("POST", "/api/agents/pairing-codes", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


def _stored_keys(keyring: MemoryKeyring) -> list[str]:
    return list(keyring.items.values())


def test_a_fresh_code_pairs_and_the_same_code_again_is_refused(
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    memory_keyring: MemoryKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    code = _issue(owner)

    assert cli.main(["pair", code.lower(), "--server", server.url + "/"]) == 0
    out, err = capsys.readouterr()
    assert f"Paired with {server.url} as “Kitchen PC”" in out, out
    assert "No backup configuration is assigned yet" in out
    keys = _stored_keys(memory_keyring)
    assert len(keys) == 1 and keys[0].startswith("bka_")
    assert keys[0] not in out + err and "bka_" not in out + err
    settings = load_settings()
    assert settings.server_url == server.url
    agents = owner.request("GET", "/api/agents").json()["agents"]
    assert [a["name"] for a in agents] == ["Kitchen PC"] and settings.agent_id == agents[0]["id"]
    beat = server.agent_client(keys[0]).post("/api/agent/heartbeat", json={"version": "t"})
    assert beat.status_code == 200

    # the same code a second time: refused, and the stored key is untouched
    assert cli.main(["pair", code, "--server", server.url]) == 1
    out, err = capsys.readouterr()
    assert "This pairing code was already used" in err and "Nothing was saved" in err, err
    assert _stored_keys(memory_keyring) == keys
    assert len(owner.request("GET", "/api/agents").json()["agents"]) == 1


def test_ten_wrong_codes_then_even_the_right_one_waits(
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    memory_keyring: MemoryKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    code = _issue(owner)
    wrong = "AAA-AAA-AAA" if code != "AAA-AAA-AAA" else "BBB-BBB-BBB"
    for _ in range(10):
        assert cli.main(["pair", wrong, "--server", server.url]) == 1
        assert "No such pairing code" in capsys.readouterr().err
    assert cli.main(["pair", code, "--server", server.url]) == 1
    err = capsys.readouterr().err
    assert "Too many wrong pairing codes from this address: wait" in err, err
    assert memory_keyring.items == {}
    assert owner.request("GET", "/api/agents").json()["agents"] == []
    assert load_settings().server_url is None


def test_an_expired_code_says_so(
    sqlite_url: str,
    tmp_path: Path,
    agent_dir: Path,
    memory_keyring: MemoryKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    services = Services.build(settings)
    with serve_in_thread(settings, services) as url:
        owner = Owner(url)
        r = owner.http.post(
            "/api/auth/signup", json={"email": "o@example.com", "password": "correct horse"}
        )
        assert r.status_code == 201, r.text
        code = _issue(owner)
        later = utcnow() + timedelta(minutes=15, seconds=5)
        services.pairing.clock = lambda: later  # the server's clock, fifteen minutes on
        assert cli.main(["pair", code, "--server", url]) == 1
        err = capsys.readouterr().err
        assert "This pairing code expired (it was valid for 15 minutes)" in err, err
        assert memory_keyring.items == {}
        assert owner.request("GET", "/api/agents").json()["agents"] == []
        owner.close()


def test_a_server_that_does_not_answer_is_named(
    agent_dir: Path, memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    # port 9 (discard): nothing listens there on a test machine
    assert cli.main(["pair", "K7Q-4MX-P2D", "--server", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "the server did not answer at http://127.0.0.1:9" in err, err
    assert memory_keyring.items == {}
