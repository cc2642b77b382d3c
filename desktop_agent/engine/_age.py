"""Encrypted ``full`` archives: the archive as a standard ``age`` file (docs/recovery.md).

An encrypted archive is ``backup-….tar.gz.age`` (or ``.tar.zst.age``, ``.tar.age``): the usual
compressed tar, encrypted by ``pyrage`` (the ``age`` format: X25519 recipients, ChaCha20-Poly1305
in 64 KiB authenticated chunks) for these recipients:

* the **agent's key**, an X25519 key derived (HKDF) from this machine's repository key, so the
  machine that made it opens it with what its keychain holds, and the recovery code that
  unwraps that repository key opens it too;
* the account's **recovery key** (``age1…``, from the recovery code), so ``age -d -i`` with the
  identity ``backapp-agent recovery identity`` prints opens it without BackApp;
* the **organisation's recovery key**, when an administrator set one up.

Both directions stream through a bounded queue and a helper thread that runs ``pyrage``'s
``encrypt_io``/``decrypt_io``: the archive is never held in memory or written to disk.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import IntegrityError, RestoreError

if TYPE_CHECKING:
    import pyrage

__all__ = [
    "AGE_SUFFIX",
    "AgeDecryptingReader",
    "AgeEncryptor",
    "agent_identity",
    "agent_recipient",
    "identity_from_text",
    "is_encrypted_name",
]

AGE_SUFFIX = ".age"
_INFO_AGENT = b"backapp agent archive identity v1"
_DEPTH = 4
_POLL = 0.2


class _Stop(Exception):
    """Raised inside a helper's callback to end ``pyrage`` early (abort/close)."""


def is_encrypted_name(filename: str) -> bool:
    """Whether an archive's name says it is an ``age`` file."""
    return filename.lower().endswith(AGE_SUFFIX)


def agent_identity(repository_key: bytes) -> pyrage.x25519.Identity:
    """The agent's archive identity: HKDF-SHA256 of the repository key, as an ``age`` X25519
    identity. Deterministic, so the key the recovery code unwraps gives the same identity."""
    import bech32
    import pyrage

    secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO_AGENT).derive(
        repository_key
    )
    words = bech32.convertbits(secret, 8, 5)
    assert words is not None
    return pyrage.x25519.Identity.from_str(bech32.bech32_encode("age-secret-key-", words).upper())


def agent_recipient(repository_key: bytes) -> str:
    """The public half of :func:`agent_identity` (``age1…``)."""
    return str(agent_identity(repository_key).to_public())


def identity_from_text(text: str) -> pyrage.x25519.Identity:
    """An ``AGE-SECRET-KEY-1…`` line as an identity."""
    import pyrage

    return pyrage.x25519.Identity.from_str(text.strip())


class AgeEncryptor:
    """A sink that encrypts what is written to it for ``recipients`` and hands the ``age`` file,
    in order, to ``sink`` (from a helper thread). ``close`` ends the file (its last chunk and
    tag); ``abort`` stops without ending it. Errors of ``sink`` come back from ``write``/``close``
    as they were raised."""

    def __init__(self, sink: Callable[[bytes], None], recipients: Sequence[str]) -> None:
        import pyrage

        if not recipients:
            raise ValueError("an encrypted archive needs at least one recipient")
        self._targets = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_DEPTH)
        self._pending = b""
        self._eof = False
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="age-encrypt", daemon=True)
        self._thread.start()

    # pyrage's side -------------------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        while not self._pending and not self._eof:
            if self._stopped.is_set():
                raise _Stop
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is None:
                self._eof = True
            else:
                self._pending = item
        size = len(self._pending) if size < 0 else size
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def _write_out(self, data: bytes) -> int:
        if self._stopped.is_set():
            raise _Stop
        try:
            self._sink(bytes(data))
        except BaseException as exc:
            self._error = exc
            raise
        return len(data)

    def _run(self) -> None:
        import pyrage

        writer = _Writer(self._write_out)
        try:
            pyrage.encrypt_io(self, writer, self._targets)
        except Exception as exc:
            if self._error is None:
                self._error = exc
        finally:
            self._stopped.set()

    # the archive's side --------------------------------------------------------------------
    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` (blocks while the helper is ``_DEPTH`` chunks behind)."""
        if not data:
            return
        while True:
            self._raise()
            if self._stopped.is_set():
                raise RuntimeError("the archive encryption stopped")
            try:
                self._queue.put(bytes(data), timeout=_POLL)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """End the ``age`` file and wait until ``sink`` has all of it."""
        while not self._stopped.is_set():
            try:
                self._queue.put(None, timeout=_POLL)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop at once (the upload is being abandoned); never raises."""
        self._stopped.set()
        self._thread.join(timeout=30)


class _Writer:
    def __init__(self, write: Callable[[bytes], int]) -> None:
        self.write = write

    def flush(self) -> None:
        pass


class AgeDecryptingReader(io.RawIOBase):
    """The plaintext of the ``age`` stream ``raw``, read with ``identities`` (on a helper thread).

    ``IntegrityError`` when none of the identities opens it ("not encrypted for…") or it was
    altered or cut short; an error of ``raw`` itself (the download) comes back as raised."""

    def __init__(self, raw: IO[bytes], identities: Sequence[pyrage.x25519.Identity]) -> None:
        super().__init__()
        self._raw = raw
        self._identities = list(identities)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_DEPTH)
        self._pending = b""
        self._done = False
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="age-decrypt", daemon=True)
        self._thread.start()

    def _read_raw(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size)
        except BaseException as exc:
            self._error = exc
            raise

    def _put(self, item: bytes | None) -> int:
        while True:
            if self._closing.is_set():
                raise _Stop
            try:
                self._queue.put(item, timeout=_POLL)
                return len(item or b"")
            except queue.Full:
                continue

    def _run(self) -> None:
        import pyrage

        try:
            pyrage.decrypt_io(_Reader(self._read_raw), _Writer(self._put), self._identities)
        except Exception as exc:
            if self._error is None:
                self._error = _decrypt_error(exc)
        finally:
            try:
                self._put(None)
            except _Stop:
                pass

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            item = self._queue.get()
            if item is None:
                self._done = True
            else:
                self._pending = item
        if not self._pending:
            self._thread.join()
            if self._error is not None:
                raise self._error
            return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        """Read to the end, so that the last chunk's tag is checked (a tar reader stops at its
        end-of-archive blocks, before the ``age`` file's end)."""
        while self.read(1 << 16):
            pass

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=30)
        super().close()


class _Reader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read


def _decrypt_error(exc: Exception) -> RestoreError:
    text = str(exc)
    if "No matching keys" in text:
        return IntegrityError(
            "the archive is encrypted, and not for any key given: restore it on the machine "
            "that made it, or with --recovery-code-stdin and the account's recovery code"
        )
    return IntegrityError(f"the encrypted archive is damaged or cut short ({text})")
