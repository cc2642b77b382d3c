"""Where this machine keeps its repository key: the OS keychain (as the API key), else a file with
mode 0600 in the agent's config folder. Made once, on the first snapshot, from the OS CSPRNG.

The server holds it only wrapped for the account's recovery key (docs/recovery.md): losing it is
recovered with the recovery code; losing it and the code loses the snapshots.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .._errors import KeyStoreError
from .._keystore import KeychainStore
from .crypto import KEY_BYTES, new_repository_key

log = logging.getLogger("desktop_agent.engine.repo")

SERVICE = "backapp-repository"
ENV_REPOSITORY_KEY = "BACKAPP_REPOSITORY_KEY"


class RepoKeyStore(KeychainStore):
    """The repository key of the agent ``account`` (server URL and agent id)."""

    def _file(self, account: str) -> Path:
        safe = base64.urlsafe_b64encode(account.encode()).decode().rstrip("=")
        return self.config_dir / "repository-keys" / f"{safe}.key"

    def load(self, account: str) -> bytes | None:
        from_env = self._env.get(ENV_REPOSITORY_KEY, "").strip()
        if from_env:
            return _decode(from_env, ENV_REPOSITORY_KEY)
        path = self._file(account)
        try:
            return _decode(path.read_text().strip(), str(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise KeyStoreError(f"cannot read the repository key {path}: {exc}") from exc
        # The file exists only when no keychain worked when the key was made: read it first, and
        # a headless machine never imports the keychain library (~0.2 s of every command).
        backend = self.backend()
        try:
            text = backend.get_password(SERVICE, account)
        except Exception as exc:  # keyring backends raise all sorts of things when unusable
            log.debug("keychain read failed: %s", exc)
            text = None
        return _decode(text, "the keychain") if text else None

    def load_or_create(self, account: str) -> bytes:
        """The key, made and stored first if there is none (one process at a time)."""
        key = self.load(account)
        if key is not None:
            return key
        with self._lock():
            key = self.load(account)
            if key is not None:
                return key
            key = new_repository_key()
            self._save(account, key)
            log.info("made this machine's repository key")
            return key

    def store(self, account: str, key: bytes) -> None:
        """Put ``key`` back (e.g. recovered with the recovery code) where ``load`` finds it."""
        if len(key) != KEY_BYTES:
            raise KeyStoreError("a repository key is 32 bytes")
        with self._lock():
            self._save(account, key)

    def _save(self, account: str, key: bytes) -> None:
        text = base64.b64encode(key).decode()
        backend = self.backend()
        path = self._file(account)
        try:
            backend.set_password(SERVICE, account, text)
            if backend.get_password(SERVICE, account) == text:
                # ``load`` reads a key file first: one left from before would win over this key.
                path.unlink(missing_ok=True)
                return
        except Exception as exc:
            log.info("no usable keychain (%s); keeping the repository key in a 0600 file", exc)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text + "\n")
            # Replaced whole (a key continued from another machine replaces an unused one).
            os.replace(tmp, path)
        except OSError as exc:
            raise KeyStoreError(f"cannot store the repository key in {path}: {exc}") from exc

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.config_dir / "repository-key.lock"
        with open(path, "a+b") as fh:
            if sys.platform == "win32":  # pragma: no cover - Windows
                import msvcrt

                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyStoreError(f"the repository key in {where} is not a 32-byte base64 key")
    return key
