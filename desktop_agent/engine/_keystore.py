"""Where the agent's API key lives.

In order of preference: ``$BACKAPP_AGENT_API_KEY`` (for containers and CI; anything that can read the
process environment can read it), the OS keychain through ``keyring`` (macOS Keychain, Windows
Credential Locker, Secret Service on Linux desktops), and, when no keychain backend works (a headless
Linux server), a file ``api-key`` with mode 0600 in the agent's config directory.

The file exists only while no keychain works (a save to a working keychain removes it), so ``load``
reads it before asking the keychain: on a headless machine the keychain library is never imported,
which is ~0.2 s of CPU saved on every short command (and the file is the newer key if a keychain
that failed once works again).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._errors import KeyStoreError

if TYPE_CHECKING:
    import keyring.backend

__all__ = [
    "ENV_API_KEY",
    "KEY_FILE",
    "KEYRING_SERVICE",
    "KeyLocation",
    "KeyStore",
    "KeychainStore",
]

log = logging.getLogger("desktop_agent.engine.keystore")

ENV_API_KEY = "BACKAPP_AGENT_API_KEY"
KEYRING_SERVICE = "backapp-agent"
KEY_FILE = "api-key"


@dataclass(frozen=True, slots=True)
class KeyLocation:
    """Where a key was stored or found: ``kind`` is ``env``, ``keyring`` or ``file``."""

    kind: Literal["env", "keyring", "file"]
    detail: str

    def describe(self) -> str:
        if self.kind == "env":
            return f"the environment variable {ENV_API_KEY}"
        if self.kind == "keyring":
            return f"the OS keychain ({self.detail})"
        return f"the file {self.detail} (readable only by you: no usable keychain on this machine)"


def _backend_name(backend: keyring.backend.KeyringBackend) -> str:
    return f"{type(backend).__module__}.{type(backend).__name__}"


class KeychainStore:
    """A secret kept in the OS keychain, else in a file in ``config_dir``, and read from the
    environment (``env``, by default ``os.environ``) before both.

    ``backend`` defaults to ``keyring.get_keyring()``; tests pass their own.
    """

    def __init__(
        self,
        config_dir: Path,
        *,
        backend: keyring.backend.KeyringBackend | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_dir = config_dir
        self._backend = backend
        self._env = os.environ if env is None else env

    def backend(self) -> keyring.backend.KeyringBackend:
        if self._backend is not None:
            return self._backend
        import keyring  # here: ~0.2 s, and a headless machine with a key file never needs it

        return keyring.get_keyring()


class KeyStore(KeychainStore):
    """Stores and reads the API key of the agent configured for ``account`` (the server URL)."""

    @property
    def key_file(self) -> Path:
        return self.config_dir / KEY_FILE

    def save(self, account: str, key: str) -> KeyLocation:
        """Store ``key``: in the keychain if one works, else in a 0600 file (and say so in the log)."""
        backend = self.backend()
        try:
            backend.set_password(KEYRING_SERVICE, account, key)
        except Exception as exc:  # keyring backends raise all sorts of things when unusable
            # The info line reaches people (the tray's activity box): in words. The backend's own
            # text (install hints, links) is for whoever debugs it.
            log.info(
                "No usable keychain on this machine: the API key is kept in %s, readable only by "
                "you",
                self.key_file,
            )
            log.debug("keychain %s refused the key: %s", _backend_name(backend), exc)
            self._write_file(key)
            return KeyLocation("file", str(self.key_file))
        self._remove_file()
        return KeyLocation("keyring", _backend_name(backend))

    def load(self, account: str) -> tuple[str, KeyLocation] | None:
        """The key and where it came from, or ``None`` when none is stored."""
        from_env = self._env.get(ENV_API_KEY, "").strip()
        if from_env:
            return from_env, KeyLocation("env", ENV_API_KEY)
        try:
            text = self.key_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise KeyStoreError(f"cannot read the API key file {self.key_file}: {exc}") from exc
        if text:
            return text, KeyLocation("file", str(self.key_file))
        backend = self.backend()
        try:
            key = backend.get_password(KEYRING_SERVICE, account)
        except Exception as exc:
            log.debug("keychain read failed (%s): %s", _backend_name(backend), exc)
            key = None
        return (key, KeyLocation("keyring", _backend_name(backend))) if key else None

    def delete(self, account: str) -> None:
        """Forget the key for ``account`` (keychain and file)."""
        try:
            self.backend().delete_password(KEYRING_SERVICE, account)
        except Exception as exc:
            log.debug("keychain delete: %s", exc)
        self._remove_file()

    def _write_file(self, key: str) -> None:
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.key_file.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600) if hasattr(os, "fchmod") else None
                os.write(fd, key.encode("utf-8") + b"\n")
            finally:
                os.close(fd)
            os.replace(tmp, self.key_file)
        except OSError as exc:
            raise KeyStoreError(f"cannot write the API key file {self.key_file}: {exc}") from exc

    def _remove_file(self) -> None:
        try:
            self.key_file.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the old key file %s: %s", self.key_file, exc)
