"""Organisation recovery (docs/recovery.md, "Organisation recovery"): an administrator's recovery
key that every agent of the server also wraps its repository key for, and encrypts its encrypted
``full`` archives for.

BackApp has no organisations: the server's administrators (``User.is_admin``) are the
organisation, and its key covers every agent of the server. The key is made on the
administrator's machine (``backapp-agent recovery organisation-code``): the server receives only
its public half (an ``age`` recipient), from an administrator in the web console, and never the
code; it cannot decrypt anything with what it keeps here.

An administrator's agent may then get a signed GET for any *encrypted* archive of the server
(``POST /api/agent/organisation/restore``): ciphertext only, which opens with the organisation code
when the archive was made after the key was set up; snapshots are in
:mod:`backend.services.organisation_access`. Plain archives stay with their owners.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.backups.tables import BackupLog
from backend.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.recovery.tables import OrganisationKey, OrganisationWrappedKey
from backend.services.accounts import CurrentUser
from backend.services.agent_registry import AgentIdentity
from backend.services.agents import parse_uuid
from backend.services.clock import iso, utcnow
from backend.services.key_material import check_wrapped, store_wrapped, write_transaction
from backend.services.organisation_access import administrator, record_access

__all__ = ["OrganisationRecoveryService", "OrganisationState"]

_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")


@dataclass(frozen=True, slots=True)
class OrganisationState:
    """The organisation key's public part, and how many agents hold a current wrapped key."""

    public_key: str
    version: int
    set_by: str | None
    updated_at: str
    wrapped_agents: int
    agent_key_version: int | None = None
    """The version the asking agent's wrapped key is for (``None``: it has none)."""


def _admin(user: CurrentUser) -> None:
    if not user.is_admin:
        raise Forbidden("only an administrator may set up organisation recovery")


class OrganisationRecoveryService:
    """The organisation key (one per server), agents' keys wrapped for it, and administrators'
    restores with it."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock

    async def state(self, agent_id: uuid.UUID | None = None) -> OrganisationState | None:
        """The current organisation key, ``None`` when none is set up."""
        row = await OrganisationKey.select(
            OrganisationKey.public_key,
            OrganisationKey.version,
            OrganisationKey.updated_at,
            OrganisationKey.set_by.email.as_alias("set_by_email"),
        ).first()
        if row is None:
            return None
        wrapped = await OrganisationWrappedKey.count().where(
            OrganisationWrappedKey.version == row["version"]
        )
        mine: int | None = None
        if agent_id is not None:
            own = (
                await OrganisationWrappedKey.select(OrganisationWrappedKey.version)
                .where(OrganisationWrappedKey.agent == agent_id)
                .first()
            )
            mine = own["version"] if own else None
        return OrganisationState(
            public_key=row["public_key"],
            version=row["version"],
            set_by=row["set_by_email"],
            updated_at=iso(row["updated_at"]) or "",
            wrapped_agents=wrapped,
            agent_key_version=mine,
        )

    async def set_key(self, user: CurrentUser, public_key: str) -> OrganisationState:
        """Set up (or replace: version + 1, and every agent wraps again) the organisation key.
        ``Forbidden`` for a non-administrator, ``InvalidInput`` for anything but an ``age``
        recipient (a code or an identity pasted by mistake is refused, and not stored)."""
        _admin(user)
        text = public_key.strip()
        if not _RECIPIENT.fullmatch(text):
            raise InvalidInput(
                "publicKey: paste the public key (age1…, 62 characters) that `backapp-agent "
                "recovery organisation-code` printed, never the code itself",
                field="publicKey",
            )
        now = self.clock()
        async with write_transaction():
            row = await OrganisationKey.select().first()
            if row is not None and row["public_key"] == text:
                pass  # the same key again: nothing to re-wrap
            elif row is None:
                await OrganisationKey.insert(
                    OrganisationKey(
                        public_key=text, version=1, set_by=user.id, created_at=now, updated_at=now
                    )
                )
            else:
                await OrganisationKey.update(
                    {
                        OrganisationKey.public_key: text,
                        OrganisationKey.version: row["version"] + 1,
                        OrganisationKey.set_by: user.id,
                        OrganisationKey.updated_at: now,
                    }
                ).where(OrganisationKey.id == row["id"])
                # Keys wrapped for the old key would open with the old code: gone with it.
                await OrganisationWrappedKey.delete(force=True)
        state = await self.state()
        assert state is not None
        return state

    async def remove(self, user: CurrentUser) -> None:
        """Remove the organisation key and every key wrapped for it (administrators only).
        Archives already encrypted for it still open with its code."""
        _admin(user)
        async with write_transaction():
            await OrganisationWrappedKey.delete(force=True)
            await OrganisationKey.delete(force=True)

    async def put_wrapped(self, agent: AgentIdentity, *, wrapped_key: str, version: int) -> int:
        """Store the agent's repository key wrapped for organisation key ``version``;
        ``Conflict`` when there is no organisation key or ``version`` is not the current one."""
        check_wrapped(wrapped_key)
        now = self.clock()
        async with write_transaction():
            current = await OrganisationKey.select(OrganisationKey.version).first()
            if current is None:
                raise Conflict("no organisation recovery key is set up on this server")
            if current["version"] != version:
                raise Conflict(
                    f"the organisation key is at version {current['version']}, not {version}: "
                    "wrap the key for the current one"
                )
            await store_wrapped(OrganisationWrappedKey, agent.id, wrapped_key, version, now)
        return version

    async def restorable(self, agent: AgentIdentity, backup_id: str) -> dict[str, Any]:
        """The row of an encrypted, completed archive of any user, for an administrator's agent
        restoring with the organisation code; the download is recorded in the log of the machine
        that made it (:func:`record_access`). ``NotFound`` for anyone else, for a plain archive
        or a snapshot (see :func:`snapshot_key`), and when no organisation key is set up.
        """
        admin = await administrator(agent)
        if admin is None:
            raise NotFound("backupId: no such encrypted archive")
        row = (
            await BackupLog.select().where(BackupLog.id == parse_uuid(backup_id, "backup")).first()
        )
        if (
            row is None
            or row.get("backup_type") == "incremental"
            or not str(row["filename"]).endswith(".age")
        ):
            raise NotFound("backupId: no such encrypted archive")
        if row["status"] != "completed":
            raise Conflict(f"backupId: this backup is {row['status']}, there is nothing to restore")
        await record_access(agent, admin["email"], row, "a download of the encrypted archive")
        return dict(row)
