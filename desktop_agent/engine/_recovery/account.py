"""The account side of recovery: setting it up, rotating the code, keeping this machine's wrapped
repository key current on the server, and getting a repository key back with the code.

Every secret stays in this process: the code is read from the person, the recovery identity is
derived here, a repository key is unwrapped here and goes only to the keychain. The server gets
the recipient (public), the salt, a proof digest's input (useless for decrypting) and wrapped
keys.
"""

from __future__ import annotations

import base64
import hmac
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ... import __version__
from .._errors import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    RecoveryError,
    RestoreError,
    WrongRecoveryCode,
)
from .._notices import LOSS_WARNING, NOT_SET_UP
from ..protocol import Heartbeat
from .code import (
    DEFAULT_KDF,
    KdfParams,
    RecoveryKey,
    decode_b64,
    new_recovery_code,
    new_salt,
    wrap_key,
)

__all__ = [
    "LOSS_WARNING",
    "Continued",
    "InheritedAgent",
    "NOT_SET_UP",
    "OrganisationSnapshotKey",
    "Recovery",
    "RecoveryInfo",
    "RecoveryPlane",
    "RepoKeyLookup",
    "WrappedRepoKey",
    "archive_recipients",
    "keep_wrapped",
]

log = logging.getLogger("desktop_agent.engine.recovery")


@dataclass(frozen=True, slots=True)
class RecoveryInfo:
    """What the server says of the account's recovery key (all public)."""

    configured: bool
    public_key: str | None = None
    salt: str | None = None
    kdf: str | None = None
    version: int | None = None
    agent_key_version: int | None = None
    """The version this agent's wrapped key is for; ``None``: the server holds none."""
    organisation_key: str | None = None
    """The organisation's recovery recipient (``age1…``), when an administrator set one up."""
    organisation_version: int | None = None
    agent_organisation_key_version: int | None = None
    """The organisation key version this agent's key is wrapped for; ``None``: none."""


@dataclass(frozen=True, slots=True)
class WrappedRepoKey:
    agent_id: str
    agent_name: str
    wrapped: bytes
    version: int


@dataclass(frozen=True, slots=True)
class OrganisationSnapshotKey:
    """What ``POST /api/agent/organisation/snapshot`` hands an administrator's agent: the key of
    the repository that holds a snapshot, wrapped for the organisation key."""

    backup_id: str
    agent_id: str
    """The repository's agent, whose objects are read with it."""
    agent_name: str
    config_name: str
    wrapped: bytes
    version: int

    @classmethod
    def of(cls, body: Any) -> OrganisationSnapshotKey:
        return cls(
            backup_id=str(body["backupId"]),
            agent_id=str(body["agentId"]),
            agent_name=str(body.get("agentName") or ""),
            config_name=str(body.get("configName") or ""),
            wrapped=base64.b64decode(str(body["wrappedKey"]), validate=True),
            version=int(body["version"]),
        )


class RecoveryPlane(Protocol):
    """The agent API's recovery endpoints (``ApiClient`` implements them)."""

    def heartbeat(
        self, *, version: str, platform: str, timezone: str | None = None
    ) -> Heartbeat: ...

    def recovery_state(self) -> RecoveryInfo: ...

    def recovery_setup(
        self, *, public_key: str, salt: str, kdf: str, proof: str
    ) -> RecoveryInfo: ...

    def recovery_rotate(
        self,
        *,
        old_version: int,
        old_proof: str,
        public_key: str,
        salt: str,
        kdf: str,
        proof: str,
        keys: list[tuple[str, bytes]],
    ) -> RecoveryInfo: ...

    def recovery_keys(self) -> list[WrappedRepoKey]: ...

    def repo_key_put(self, wrapped: bytes, version: int) -> None: ...

    def repo_key_get(self, agent_id: str | None = None) -> WrappedRepoKey: ...

    def organisation_key_put(self, wrapped: bytes, version: int) -> None: ...

    def repo_continue(
        self, *, from_agent_id: str, proof: str, wrapped: bytes, version: int
    ) -> Continued: ...


@dataclass(frozen=True, slots=True)
class InheritedAgent:
    """A machine this agent replaces (the owner's mark), as ``GET /api/agent/inherited`` says."""

    agent_id: str
    name: str
    snapshots: int
    """Committed snapshots in its repository (0: nothing to continue)."""
    continued: bool
    """This agent continues its repository already."""

    @classmethod
    def of_list(cls, body: Any) -> list[InheritedAgent]:
        return [
            cls(str(a["agentId"]), str(a["name"]), int(a["snapshots"]), bool(a["continued"]))
            for a in body["agents"]
        ]


@dataclass(frozen=True, slots=True)
class Continued:
    """What ``Recovery.continue_from`` took over."""

    from_agent_id: str
    from_agent_name: str
    snapshots: int

    @classmethod
    def of(cls, body: Any) -> Continued:
        return cls(str(body["fromAgentId"]), str(body["fromAgentName"]), int(body["snapshots"]))


class RepoKeyLookup(Protocol):
    """This machine's repository keys (``RepoKeyStore``)."""

    def load(self, account: str) -> bytes | None: ...

    def store(self, account: str, key: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Issued:
    """A new code (shown once) and the recovery key version it belongs to."""

    code: str
    version: int
    keys: int
    """How many repository keys are wrapped for it."""


_warned: set[str] = set()
_warned_lock = threading.Lock()


class Recovery:
    """Recovery for the agent behind ``plane``, with this machine's keys in ``keys`` (accounts
    ``{server_url}#{agent_id}``, as snapshots use them)."""

    def __init__(
        self,
        plane: RecoveryPlane,
        keys: RepoKeyLookup,
        *,
        server_url: str,
        kdf: KdfParams = DEFAULT_KDF,
        agent_id: str | None = None,
    ) -> None:
        self.plane = plane
        self.keys = keys
        self.server_url = server_url
        self.kdf = kdf
        self._agent_id = agent_id

    def _account(self, agent_id: str) -> str:
        return f"{self.server_url}#{agent_id}"

    def agent_id(self) -> str:
        """This agent's id (one heartbeat)."""
        if self._agent_id is None:
            beat = self.plane.heartbeat(version=__version__, platform=sys.platform)
            if beat.agent is None:
                raise ConfigurationError("the server did not say which agent this is")
            self._agent_id = beat.agent.id
        return self._agent_id

    def status(self) -> RecoveryInfo:
        return self.plane.recovery_state()

    def _key_for(self, info: RecoveryInfo, code: str) -> RecoveryKey:
        """The recovery key ``code`` gives with the account's salt; ``WrongRecoveryCode`` when it
        is not the account's (checked before anything is decrypted)."""
        if not info.configured or not info.public_key or not info.salt or not info.kdf:
            raise RecoveryError(
                "recovery is not set up for this account: nothing was wrapped for a code"
            )
        key = RecoveryKey.derive(
            code, decode_b64(info.salt, "recovery salt"), KdfParams.parse(info.kdf)
        )
        key.check(info.public_key)
        return key

    def identity(self, code: str) -> RecoveryKey:
        """The account's recovery key from ``code`` (``WrongRecoveryCode`` when it is not the
        current one), for ``recovery identity``: its ``identity_text`` opens encrypted archives
        with the ``age`` tool."""
        return self._key_for(self.plane.recovery_state(), code)

    def organisation_identity(self, code: str) -> RecoveryKey:
        """The organisation's recovery key from an administrator's organisation code, checked
        against the one the server has (``WrongRecoveryCode`` otherwise)."""
        info = self.plane.recovery_state()
        if not info.organisation_key:
            raise RecoveryError(
                "no organisation recovery key is set up on this server (an administrator sets "
                "one up in the web console, on the Agents page)"
            )
        key = RecoveryKey.organisation(code)
        if not hmac.compare_digest(key.recipient.encode(), info.organisation_key.encode()):
            raise WrongRecoveryCode(
                "wrong recovery code: it is not the organisation's current recovery code"
            )
        return key

    def init(self) -> Issued:
        """Set recovery up: a new code (returned to be shown once), its public key to the server,
        and this machine's repository key wrapped for it if there is one yet."""
        agent_id = self.agent_id()
        if self.plane.recovery_state().configured:
            raise RecoveryError(
                "recovery is already set up for this account: to issue a new code, run "
                "`backapp-agent recovery rotate --recovery-code-stdin` with the current one"
            )
        code = new_recovery_code()
        salt = new_salt()
        key = RecoveryKey.derive(code, salt, self.kdf)
        info = self.plane.recovery_setup(
            public_key=key.recipient,
            salt=base64.b64encode(salt).decode(),
            kdf=self.kdf.text(),
            proof=key.proof,
        )
        wrapped = 0
        own = self.keys.load(self._account(agent_id))
        if own is not None and info.version is not None:
            self.plane.repo_key_put(wrap_key(own, key.recipient), info.version)
            wrapped = 1
        return Issued(code=code, version=info.version or 1, keys=wrapped)

    def rotate(self, old_code: str) -> Issued:
        """A new code that replaces ``old_code``: every repository key of the account is
        unwrapped with the old code and wrapped for the new one, all at once on the server."""
        agent_id = self.agent_id()
        info = self.plane.recovery_state()
        old = self._key_for(info, old_code)
        assert info.version is not None
        plain: dict[str, bytes] = {}
        for item in self.plane.recovery_keys():
            plain[item.agent_id] = old.unwrap(item.wrapped)
        own = self.keys.load(self._account(agent_id))
        if own is not None:
            if agent_id in plain and plain[agent_id] != own:
                log.warning("this machine's repository key differs from the one on the server")
            plain[agent_id] = own
        code = new_recovery_code()
        salt = new_salt()
        new = RecoveryKey.derive(code, salt, self.kdf)
        done = self.plane.recovery_rotate(
            old_version=info.version,
            old_proof=old.proof,
            public_key=new.recipient,
            salt=base64.b64encode(salt).decode(),
            kdf=self.kdf.text(),
            proof=new.proof,
            keys=[(aid, wrap_key(k, new.recipient)) for aid, k in sorted(plain.items())],
        )
        return Issued(code=code, version=done.version or info.version + 1, keys=len(plain))

    def recover_key(self, code: str, agent_id: str | None = None) -> bytes:
        """The repository key of ``agent_id`` (this agent when ``None``), unwrapped with
        ``code`` and, for this agent, put back in this machine's keychain.
        ``InvalidRecoveryCode``/``WrongRecoveryCode`` before any download."""
        mine = self.agent_id()
        info = self.plane.recovery_state()
        key = self._key_for(info, code)
        item = self.plane.repo_key_get(None if agent_id in (None, mine) else agent_id)
        if item.version != info.version:
            raise IntegrityError(
                f"the server's wrapped key is for recovery key version {item.version}, not the "
                f"current {info.version}"
            )
        repo_key = key.unwrap(item.wrapped)
        if agent_id in (None, mine):
            self.keys.store(self._account(mine), repo_key)
            log.info("the repository key is back in this machine's key store")
        return repo_key

    def continue_from(self, code: str, from_agent_id: str) -> Continued:
        """Continue the snapshot repository of ``from_agent_id`` (a machine this one replaces,
        the owner's mark): its key is unwrapped with ``code`` here, the server hands the
        repository to this agent (with a proof of the code), and the key becomes this machine's
        repository key, also kept for reading the old machine's snapshots. The next snapshot
        adds to that repository, so it uploads only what differs. ``WrongRecoveryCode`` before
        anything is asked of the server; nothing is stored here unless the server agreed."""
        mine = self.agent_id()
        info = self.plane.recovery_state()
        key = self._key_for(info, code)
        assert info.public_key is not None and info.version is not None
        item = self.plane.repo_key_get(from_agent_id)
        if item.version != info.version:
            raise IntegrityError(
                f"the server's wrapped key is for recovery key version {item.version}, not the "
                f"current {info.version}"
            )
        repo_key = key.unwrap(item.wrapped)
        done = self.plane.repo_continue(
            from_agent_id=from_agent_id,
            proof=key.proof,
            wrapped=wrap_key(repo_key, info.public_key),
            version=info.version,
        )
        self.keys.store(self._account(mine), repo_key)
        self.keys.store(self._account(from_agent_id), repo_key)
        log.info("this machine continues the snapshot repository of the machine it replaces")
        return done

    def archive_identities(self, maker: str | None, code: str | None = None) -> list[Any]:
        """The ``age`` identities that open an encrypted ``full`` archive ``maker`` made (this
        agent when ``None``): the agent key of ``maker``'s repository key when this machine holds
        it; with ``code``, the recovery identity and, when this machine lacks the repository key,
        the agent key unwrapped with the code (an archive made before recovery was set up).
        ``WrongRecoveryCode`` before any download; ``RestoreError`` when there is no key at all."""
        from .._age import agent_identity

        own = self.agent_id()
        maker = maker or own
        found: list[Any] = []
        key = self.keys.load(self._account(maker))
        if key is not None:
            found.append(agent_identity(key))
        if code is not None:
            info = self.plane.recovery_state()
            found.append(self._key_for(info, code).age_identity())
            if key is None:
                try:
                    found.append(agent_identity(self.recover_key(code, maker)))
                except (NotFoundError, IntegrityError) as exc:
                    log.info(
                        "no wrapped repository key of %s to open the archive with: %s", maker, exc
                    )
        if not found:
            raise RestoreError(
                "this archive is encrypted, and this machine holds no key for it: restore it "
                "with --recovery-code-stdin and the account's recovery code"
            )
        return found


def keep_wrapped(plane: RecoveryPlane, repo_key: bytes, *, server: str = "") -> RecoveryInfo | None:
    """Upload this agent's wrapped key when the server holds none, or one for an older recovery
    key (and the same for the organisation's key, when there is one); warn once per process (and
    ``server``) when recovery is not set up. Returns what the server said, ``None`` when it could
    not be asked. Never raises: a backup must not fail for this."""
    try:
        info = plane.recovery_state()
    except Exception as exc:  # a network failure here must not cost the backup
        log.warning("could not store the wrapped repository key on the server: %s", exc)
        return None
    try:
        if info.organisation_key and info.organisation_version is not None:
            if info.agent_organisation_key_version != info.organisation_version:
                plane.organisation_key_put(
                    wrap_key(repo_key, info.organisation_key), info.organisation_version
                )
                log.info("stored this machine's repository key, wrapped for the organisation")
        if not info.configured or not info.public_key or info.version is None:
            with _warned_lock:
                if server not in _warned:
                    _warned.add(server)
                    log.warning(NOT_SET_UP)
            return info
        if info.agent_key_version != info.version:
            plane.repo_key_put(wrap_key(repo_key, info.public_key), info.version)
            log.info("stored this machine's repository key, wrapped for the recovery code")
    except Exception as exc:  # a bug or a network failure here must not cost the backup
        log.warning("could not store the wrapped repository key on the server: %s", exc)
    return info


def archive_recipients(plane: RecoveryPlane, repo_key: bytes, *, server: str = "") -> list[str]:
    """The ``age`` recipients of an encrypted ``full`` archive: this agent's key (from its
    repository key, which is kept wrapped on the server as for snapshots), the account's recovery
    key and the organisation's, when set up. ``RecoveryError`` when the server cannot be asked:
    an archive encrypted without the recovery key would not open with the code."""
    from .._age import agent_recipient

    info = keep_wrapped(plane, repo_key, server=server)
    if info is None:
        raise RecoveryError(
            "cannot encrypt the archive: the server did not say which recovery key to encrypt "
            "it for"
        )
    recipients = [agent_recipient(repo_key)]
    if info.configured and info.public_key:
        recipients.append(info.public_key)
    if info.organisation_key:
        recipients.append(info.organisation_key)
    return recipients
