"""Who an encrypted full archive is for, and which keys open it (unit tests with a fake server):
the agent's key, the account's recovery key and the organisation's; the organisation's wrapped key
kept current like the account's; a restore that finds its key in the keychain, or with the code
(the recovery identity, and the agent key unwrapped from the server's copy); a wrong code before
anything else; no key at all said in words."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import pyrage
import pytest

from desktop_agent.engine._age import AgeEncryptor, agent_identity, agent_recipient
from desktop_agent.engine._errors import (
    NotFoundError,
    RecoveryError,
    RestoreError,
    WrongRecoveryCode,
)
from desktop_agent.engine._recovery.account import (
    Recovery,
    RecoveryInfo,
    WrappedRepoKey,
    archive_recipients,
    keep_wrapped,
)
from desktop_agent.engine._recovery.code import (
    KdfParams,
    RecoveryKey,
    new_recovery_code,
    wrap_key,
)

FAST = KdfParams(memory=8192, time=1, lanes=1)
SALT = bytes(16)
SERVER = "https://unit.test"


@dataclass
class FakePlane:
    info: RecoveryInfo
    wrapped: dict[str, bytes] = field(default_factory=dict)
    puts: list[tuple[bytes, int]] = field(default_factory=list)
    org_puts: list[tuple[bytes, int]] = field(default_factory=list)

    def recovery_state(self) -> RecoveryInfo:
        return self.info

    def repo_key_put(self, wrapped: bytes, version: int) -> None:
        self.puts.append((wrapped, version))

    def organisation_key_put(self, wrapped: bytes, version: int) -> None:
        self.org_puts.append((wrapped, version))

    def repo_key_get(self, agent_id: str | None = None) -> WrappedRepoKey:
        found = self.wrapped.get(agent_id or "me")
        if found is None:
            raise NotFoundError(404, "not_found", "no wrapped repository key")
        return WrappedRepoKey(agent_id or "me", "", found, self.info.version or 1)


@dataclass
class Keys:
    items: dict[str, bytes] = field(default_factory=dict)

    def load(self, account: str) -> bytes | None:
        return self.items.get(account)

    def store(self, account: str, key: bytes) -> None:
        self.items[account] = key


def _sealed(recipients: list[str], data: bytes = b"tar bytes") -> bytes:
    out = io.BytesIO()
    enc = AgeEncryptor(out.write, recipients)  # type: ignore[arg-type]
    enc.write(data)
    enc.close()
    return out.getvalue()


def test_an_archive_is_for_the_agent_the_account_and_the_organisation() -> None:
    code, org_code = new_recovery_code(), new_recovery_code()
    account = RecoveryKey.derive(code, SALT, FAST)
    org = RecoveryKey.organisation(org_code)
    repo_key = os.urandom(32)
    plane = FakePlane(
        RecoveryInfo(
            configured=True,
            public_key=account.recipient,
            version=2,
            organisation_key=org.recipient,
            organisation_version=5,
        )
    )
    recipients = archive_recipients(plane, repo_key, server=SERVER)  # type: ignore[arg-type]
    assert recipients == [agent_recipient(repo_key), account.recipient, org.recipient]
    # Both wrapped copies are brought up to date on the way.
    [(wrapped, version)] = plane.puts
    [(org_wrapped, org_version)] = plane.org_puts
    assert (version, org_version) == (2, 5)
    assert account.unwrap(wrapped) == repo_key and org.unwrap(org_wrapped) == repo_key
    sealed = _sealed(recipients)
    for identity in (agent_identity(repo_key), account.age_identity(), org.age_identity()):
        assert pyrage.decrypt(sealed, [identity]) == b"tar bytes"

    # Only what is set up: without recovery, the agent's key alone (and a warning, elsewhere).
    bare = FakePlane(RecoveryInfo(configured=False))
    assert archive_recipients(bare, repo_key) == [agent_recipient(repo_key)]  # type: ignore[arg-type]
    assert bare.puts == [] and bare.org_puts == []
    # Current copies are not sent again.
    current = FakePlane(
        RecoveryInfo(
            configured=True,
            public_key=account.recipient,
            version=2,
            agent_key_version=2,
            organisation_key=org.recipient,
            organisation_version=5,
            agent_organisation_key_version=5,
        )
    )
    keep_wrapped(current, repo_key)  # type: ignore[arg-type]
    assert current.puts == [] and current.org_puts == []


def test_the_organisation_key_comes_from_the_code_alone() -> None:
    code = new_recovery_code()
    assert (
        RecoveryKey.organisation(code).recipient
        == RecoveryKey.organisation(code.lower().replace("-", " ")).recipient
    )
    assert (
        RecoveryKey.organisation(code).recipient
        != RecoveryKey.organisation(new_recovery_code()).recipient
    )


def test_the_keys_that_open_an_archive() -> None:
    code = new_recovery_code()
    account = RecoveryKey.derive(code, SALT, FAST)
    repo_key = os.urandom(32)
    info = RecoveryInfo(
        configured=True,
        public_key=account.recipient,
        salt="AAAAAAAAAAAAAAAAAAAAAA==",
        kdf=FAST.text(),
        version=1,
    )
    plane = FakePlane(info, wrapped={"old": wrap_key(repo_key, account.recipient)})

    def recovery(keys: Keys) -> Recovery:
        return Recovery(plane, keys, server_url=SERVER, agent_id="me", kdf=FAST)  # type: ignore[arg-type]

    # This machine's own key.
    mine = Keys({f"{SERVER}#me": repo_key})
    [own] = recovery(mine).archive_identities(None)
    assert str(own) == str(agent_identity(repo_key))
    # No key here, no code: said in words.
    with pytest.raises(RestoreError, match="--recovery-code-stdin"):
        recovery(Keys()).archive_identities("old")
    # A wrong code: before anything is fetched.
    with pytest.raises(WrongRecoveryCode, match="wrong recovery code"):
        recovery(Keys()).archive_identities("old", new_recovery_code())
    # The code: the recovery identity, and the old machine's agent key from its wrapped copy
    # (an archive made before recovery was set up opens too); not stored here.
    keys = Keys()
    found = recovery(keys).archive_identities("old", code)
    assert [str(i) for i in found] == [account.identity_text(), str(agent_identity(repo_key))]
    assert keys.items == {}
    # The organisation's code is checked against the server's key.
    org_code = new_recovery_code()
    plane.info = RecoveryInfo(
        configured=False, organisation_key=RecoveryKey.organisation(org_code).recipient
    )
    assert recovery(Keys()).organisation_identity(org_code).recipient == plane.info.organisation_key
    with pytest.raises(WrongRecoveryCode):
        recovery(Keys()).organisation_identity(code)
    plane.info = RecoveryInfo(configured=False)
    with pytest.raises(RecoveryError, match="no organisation recovery key"):
        recovery(Keys()).organisation_identity(org_code)
