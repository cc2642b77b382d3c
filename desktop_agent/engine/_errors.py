"""Errors raised by the backup engine.

The tree::

    AgentError                      base of everything the engine raises on purpose
    ├── ConfigurationError          the agent is not set up (no server URL, no API key, a bad setting)
    ├── KeyStoreError               the API key could not be stored or read
    ├── NetworkError                the server or the storage could not be reached (after retries)
    ├── ApiError                    the server answered with an error body (``status``, ``error``, ``detail``)
    │   ├── AuthenticationError     401: the key is missing, unknown or revoked
    │   ├── NotFoundError           404: the config, log or upload does not exist for this agent
    │   └── ConflictError           409: e.g. the object key already holds a backup
    ├── StorageError                a PUT to a pre-signed URL failed (``status``, ``transient``)
    ├── SourceError                 a source path is missing or cannot be read
    ├── RecoveryError               recovery codes: not set up, or a key could not be recovered
    │   ├── InvalidRecoveryCode     the text is not a recovery code (a typo: the check group fails)
    │   └── WrongRecoveryCode       a valid code, but not this account's current one
    ├── RestoreError                a restore could not be done (the target is left as it was)
    │   ├── IntegrityError          the object is not what the backup recorded, or it is damaged
    │   └── RepositoryKeyMissing    no key on this machine for the repository that holds the backup
    └── BackupCancelled             the cancel handle was set (a backup's or a restore's)

Lower-level errors (``httpx``, ``OSError``) are translated at the boundary with ``raise ... from exc``.
Messages say what happened and, where there is one, what to do. They never contain the API key or the
query string of a pre-signed URL.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base class of the engine's errors."""


class ConfigurationError(AgentError):
    """The agent is not configured, or a setting is invalid."""


class KeyStoreError(AgentError):
    """The API key could not be stored or read."""


class NetworkError(AgentError):
    """The server or the storage could not be reached, even after retries."""


class ApiError(AgentError):
    """The server answered a request with an error.

    ``status`` is the HTTP status, ``error`` the short machine-readable code of the server's error body
    (``bad_request``, ``not_found``...) and ``detail`` its human-readable explanation.
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        path: str = "",
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.path = path
        self.body = body or {}
        """The whole error body (some answers carry more than ``detail``, e.g. ``missing``)."""
        where = f" ({path})" if path else ""
        super().__init__(f"server answered {status} {error}{where}: {detail}")


class AuthenticationError(ApiError):
    """401: the API key is missing, unknown or revoked. Run ``backapp-agent configure`` again."""


class NotFoundError(ApiError):
    """404: the config, log or upload does not exist for this agent."""


class ConflictError(ApiError):
    """409: a conflict, e.g. the object key already holds a backup, or a size/checksum mismatch."""


class StorageError(AgentError):
    """An upload to a pre-signed URL failed.

    ``transient`` says whether trying again (with a fresh URL where possible) may help.
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        self.status = status
        self.transient = transient
        super().__init__(message)


class SourceError(AgentError):
    """A source path of a backup config is missing or cannot be read."""


class RecoveryError(AgentError):
    """Recovery is not set up, or a repository key could not be recovered with the code."""


class InvalidRecoveryCode(RecoveryError):
    """The text is not a recovery code (wrong length, a character that is not in it, a failed
    check group)."""


class WrongRecoveryCode(RecoveryError):
    """A well-formed recovery code that is not the account's current one."""


class RestoreError(AgentError):
    """A restore could not be done (the target is left as it was)."""


def os_error_text(exc: OSError) -> str:
    """An operating-system error as people read it: ``File exists: /home/ann/x``, not
    ``[Errno 17] File exists: '/home/ann/x'``."""
    words = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{words}: {' → '.join(names)}" if names else words


def unreadable_text(
    exc: OSError, vanished: str = "vanished before it could be read", doing: str = "cannot read"
) -> str:
    """Why a file could not be read, as a per-file error says it: ``vanished`` when it is gone
    (the scan saw it), else what could not be done (``doing``) and the system's reason."""
    if isinstance(exc, FileNotFoundError):
        return vanished
    return f"{doing}: {exc.strerror or exc}"


class IntegrityError(RestoreError):
    """The downloaded object does not match the backup's recorded size or SHA-256, or the archive
    is damaged. Nothing was restored."""


KEY_ELSEWHERE = (
    "This backup was made by another machine; its key can be recovered with your recovery code: "
    "--recovery-code-stdin"
)


class RepositoryKeyMissing(RestoreError):
    """The snapshot is in a repository this machine holds no key for (``agent_id``'s: another
    machine's that this one inherits, or its own after the keychain entry was lost). Raised before
    anything is written. A caller that can get the key elsewhere (the recovery code) retries with
    a ``RepositoryKeySource`` that provides it."""

    def __init__(self, agent_id: str, message: str = KEY_ELSEWHERE) -> None:
        self.agent_id = agent_id
        super().__init__(message)


class BackupCancelled(AgentError):
    """The backup was cancelled through its cancel handle. ``deliberate``: someone stopped it (the
    user, a signal, the agent quitting), so it is recorded as ``cancelled``; otherwise (the run lost
    its lease, the upload was stopped by a failure elsewhere) it is a failure."""

    def __init__(self, reason: str = "cancelled", *, deliberate: bool = True) -> None:
        self.reason = reason
        self.deliberate = deliberate
        super().__init__(reason)
