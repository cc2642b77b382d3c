"""Where the API key is kept: the keychain, or a 0600 file when there is no usable keychain."""

from __future__ import annotations

import base64
import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail

from desktop_agent.engine import KeyStore

ACCOUNT = "https://backapp.example.org"


def FailKeyring() -> keyring.backend.KeyringBackend:  # noqa: N802 - reads like the class
    return fail.Keyring()  # type: ignore[no-untyped-call]


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.store:
            raise keyring.errors.PasswordDeleteError(username)
        del self.store[(service, username)]


class LockedKeyring(MemoryKeyring):
    """A backend that exists but refuses to work (a locked or unreachable Secret Service)."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.KeyringLocked("locked")

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("locked")


def test_keychain_when_available(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    store = KeyStore(tmp_path, backend=backend, env={})
    location = store.save(ACCOUNT, "bka_key")
    assert location.kind == "keyring"
    assert backend.store == {("backapp-agent", ACCOUNT): "bka_key"}
    assert not (tmp_path / "api-key").exists()
    assert store.load(ACCOUNT) == ("bka_key", location)
    store.delete(ACCOUNT)
    assert store.load(ACCOUNT) is None


def test_falls_back_to_a_0600_file_without_a_keychain(tmp_path: Path) -> None:
    for backend in (FailKeyring(), LockedKeyring()):
        directory = tmp_path / type(backend).__name__
        store = KeyStore(directory, backend=backend, env={})
        location = store.save(ACCOUNT, "bka_key")
        assert location.kind == "file" and location.detail == str(directory / "api-key")
        assert "no usable keychain" in location.describe()
        path = directory / "api-key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == "bka_key\n"
        key, found = store.load(ACCOUNT)  # type: ignore[misc]
        assert key == "bka_key" and found.kind == "file"


def test_without_a_keychain_the_info_line_is_words_not_the_backends_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tray shows INFO lines in its activity box: no exception text, no install link there."""
    with caplog.at_level(logging.DEBUG, logger="desktop_agent"):
        KeyStore(tmp_path, backend=FailKeyring(), env={}).save(ACCOUNT, "bka_key")
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert info == [
        f"No usable keychain on this machine: the API key is kept in {tmp_path / 'api-key'}, "
        "readable only by you"
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("No recommended backend" in line for line in debug)  # kept for whoever debugs


def test_existing_key_file_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("old")
    (tmp_path / "api-key").chmod(0o644)
    KeyStore(tmp_path, backend=FailKeyring(), env={}).save(ACCOUNT, "new")
    assert stat.S_IMODE((tmp_path / "api-key").stat().st_mode) == 0o600


def test_moving_to_a_keychain_removes_the_file(tmp_path: Path) -> None:
    KeyStore(tmp_path, backend=FailKeyring(), env={}).save(ACCOUNT, "bka_key")
    KeyStore(tmp_path, backend=MemoryKeyring(), env={}).save(ACCOUNT, "bka_key")
    assert not (tmp_path / "api-key").exists()


def test_environment_variable_wins(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    backend.set_password("backapp-agent", ACCOUNT, "from-keychain")
    store = KeyStore(tmp_path, backend=backend, env={"BACKAPP_AGENT_API_KEY": " from-env "})
    key, location = store.load(ACCOUNT)  # type: ignore[misc]
    assert key == "from-env" and location.kind == "env"


class CountingKeyring(MemoryKeyring):
    """Counts reads (an exception raised here would be taken for an unusable keychain)."""

    reads = 0

    def get_password(self, service: str, username: str) -> str | None:
        self.reads += 1
        return super().get_password(service, username)


def test_a_key_file_is_read_without_asking_the_keychain(tmp_path: Path) -> None:
    """The file exists only while no keychain works (a working keychain's save removes it), so a
    headless machine never loads the keychain library to find its key."""
    KeyStore(tmp_path, backend=FailKeyring(), env={}).save(ACCOUNT, "bka_file")
    keychain = CountingKeyring()
    key, location = KeyStore(tmp_path, backend=keychain, env={}).load(ACCOUNT)  # type: ignore[misc]
    assert (key, location.kind, keychain.reads) == ("bka_file", "file", 0)


def test_the_key_file_is_newer_than_a_stale_keychain_entry(tmp_path: Path) -> None:
    """A keychain that refused a new key (and kept an old one) and works again later: the file
    holds the key the agent was configured with last."""
    backend = MemoryKeyring()
    backend.set_password("backapp-agent", ACCOUNT, "bka_old")
    KeyStore(tmp_path, backend=FailKeyring(), env={}).save(ACCOUNT, "bka_new")
    key, _ = KeyStore(tmp_path, backend=backend, env={}).load(ACCOUNT)  # type: ignore[misc]
    assert key == "bka_new"


def test_a_key_file_machine_never_imports_the_keychain_library(tmp_path: Path) -> None:
    """~0.2 s of every short command on a headless server (the keychain library's import and its
    backend discovery): with the API key and the repository key in files, it is never loaded."""
    (tmp_path / "api-key").write_text("bka_key\n")
    account = base64.urlsafe_b64encode(b"acct").decode().rstrip("=")
    (tmp_path / "repository-keys").mkdir()
    (tmp_path / "repository-keys" / f"{account}.key").write_text(
        base64.b64encode(bytes(32)).decode() + "\n"
    )
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from desktop_agent.engine import KeyStore\n"
        "from desktop_agent.engine._repo.keys import RepoKeyStore\n"
        f"d = Path({str(tmp_path)!r})\n"
        "assert KeyStore(d, env={}).load('acct')[0] == 'bka_key'\n"
        "assert RepoKeyStore(d, env={}).load('acct') == bytes(32)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "keyring" not in json.loads(out.stdout)


def test_a_repository_key_is_replaced_whole_in_a_file_and_in_a_keychain(tmp_path: Path) -> None:
    """A machine that continues an old one's repository replaces its own unused key: in a key
    file (no keychain) the file is swapped whole; with a keychain, a key file left from before
    (read first by ``load``) goes, or it would win over the new key."""
    from desktop_agent.engine import RepoKeyStore

    old, new = bytes(range(32)), bytes(range(1, 33))
    files = RepoKeyStore(tmp_path / "a", backend=FailKeyring(), env={})
    files.store("acct", old)
    files.store("acct", new)  # an exclusive create alone would refuse: the file exists
    assert files.load("acct") == new
    [path] = (tmp_path / "a" / "repository-keys").iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    keychain = MemoryKeyring()
    stale = RepoKeyStore(tmp_path / "b", backend=FailKeyring(), env={})
    stale.store("acct", old)
    working = RepoKeyStore(tmp_path / "b", backend=keychain, env={})
    working.store("acct", new)
    assert working.load("acct") == new
    assert not any((tmp_path / "b" / "repository-keys").iterdir())
