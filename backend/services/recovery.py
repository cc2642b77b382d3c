"""Recovery keys (docs/recovery.md): a user's recovery public key and its rotations, and each
agent's repository key wrapped for it.

The server cannot decrypt anything with what it keeps here: the recovery key's private half is
derived from a code only the user has, on the machine where it is typed. What the server checks
is shape (an ``age`` recipient, an ``age`` file, base64), ownership (an agent writes only its own
wrapped key) and order (a rotation names the version it replaces, and proves it knew the old
code by a value whose digest was stored at set-up).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.agents.tables import Agent
from backend.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.recovery.tables import RecoveryKey, WrappedKey
from backend.recovery_schemas import RecoveryOut, RepoKeyOut
from backend.services.agent_registry import AgentIdentity
from backend.services.clock import iso, utcnow
from backend.services.inheritance import may_read
from backend.services.key_material import (
    b64_field,
    check_wrapped,
    proof_digest,
    store_wrapped,
    write_transaction,
)

__all__ = [
    "RecoveryService",
    "WrappedKeyIn",
    "readable_agent",
    "store_wrapped_key",
]


def _at_version(
    row: dict[str, Any] | None, version: int, *, unset: str, stale: str
) -> dict[str, Any]:
    """The account's recovery key (its ``row``); ``Conflict`` unless it is set up and at
    ``version``, ``unset`` and ``stale`` saying what to do in either case."""
    if row is None:
        raise Conflict(f"recovery is not set up for this account: {unset}")
    if row["version"] != version:
        raise Conflict(f"the recovery key is at version {row['version']}, not {version}: {stale}")
    return row


@dataclass(frozen=True, slots=True)
class WrappedKeyIn:
    agent_id: str
    wrapped_key: str


async def readable_agent(agent: AgentIdentity, agent_id: str | None) -> uuid.UUID:
    """The agent whose wrapped key ``agent`` may read when it asks for ``agent_id`` (its own when
    ``None``), or that of an agent it inherits (the owner's mark,
    :mod:`backend.services.inheritance`). Anything else is ``NotFound``, as if it did not exist."""
    if agent_id is None:
        return agent.id
    try:
        wanted = uuid.UUID(agent_id)
    except ValueError:
        raise InvalidInput("agentId: not a valid id", field="agentId") from None
    if not await may_read(agent, wanted):
        raise NotFound("no wrapped repository key for that agent")
    return wanted


class RecoveryService:
    """Set-up, rotation and wrapped keys of a user's recovery key."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock

    async def state(self, user_id: uuid.UUID, agent_id: uuid.UUID | None = None) -> RecoveryOut:
        """Whether the user has a recovery key, and its public parts (never anything secret)."""
        row = await RecoveryKey.select().where(RecoveryKey.user == user_id).first()
        if row is None:
            return RecoveryOut(configured=False)
        agent_version: int | None = None
        if agent_id is not None:
            wrapped = (
                await WrappedKey.select(WrappedKey.version)
                .where(WrappedKey.agent == agent_id)
                .first()
            )
            agent_version = wrapped["version"] if wrapped else None
        return RecoveryOut(
            configured=True,
            public_key=row["public_key"],
            salt=row["salt"],
            kdf=row["kdf"],
            version=row["version"],
            created_at=iso(row["created_at"]),
            rotated_at=iso(row["rotated_at"]) if row["rotated_at"] else None,
            agent_key_version=agent_version,
        )

    async def setup(
        self, agent: AgentIdentity, *, public_key: str, salt: str, kdf: str, proof: str
    ) -> RecoveryOut:
        """The user's first recovery key; ``Conflict`` when there is one (rotate it instead)."""
        b64_field(salt, "salt", low=16, high=64)
        digest = proof_digest(proof)
        async with write_transaction():
            if await RecoveryKey.exists().where(RecoveryKey.user == agent.user_id):
                raise Conflict(
                    "recovery is already set up for this account: rotate the code instead"
                )
            await RecoveryKey.insert(
                RecoveryKey(
                    user=agent.user_id,
                    public_key=public_key,
                    salt=salt,
                    kdf=kdf,
                    proof_digest=digest,
                    version=1,
                    created_at=self.clock(),
                )
            )
        return await self.state(agent.user_id, agent.id)

    async def rotate(
        self,
        agent: AgentIdentity,
        *,
        old_version: int,
        old_proof: str,
        public_key: str,
        salt: str,
        kdf: str,
        proof: str,
        keys: Sequence[WrappedKeyIn],
    ) -> RecoveryOut:
        """Replace the recovery key and every wrapped key of the user at once. ``Conflict`` when
        ``old_version`` is not the current one or a stored wrapped key is left out (it would be
        lost), ``Forbidden`` when ``old_proof`` is not the old code's."""
        b64_field(salt, "salt", low=16, high=64)
        digest = proof_digest(proof)
        old_digest = proof_digest(old_proof)
        wanted: dict[uuid.UUID, str] = {}
        for n, item in enumerate(keys):
            try:
                aid = uuid.UUID(item.agent_id)
            except ValueError:
                raise InvalidInput(
                    f"keys[{n}].agentId: not a valid id", field="keys.agentId"
                ) from None
            if aid in wanted:
                raise InvalidInput(f"keys[{n}]: agent {aid} named twice", field="keys")
            check_wrapped(item.wrapped_key, f"keys[{n}].wrappedKey")
            wanted[aid] = item.wrapped_key
        now = self.clock()
        async with write_transaction():
            row = await RecoveryKey.select().where(RecoveryKey.user == agent.user_id).first()
            row = _at_version(
                row,
                old_version,
                unset="set it up first",
                stale="it was rotated meanwhile; start again",
            )
            if not hmac.compare_digest(row["proof_digest"], old_digest):
                raise Forbidden("wrong recovery code: the proof of the old code does not match")
            if wanted:
                owned = await Agent.select(Agent.id).where(
                    Agent.user == agent.user_id, Agent.id.is_in(list(wanted))
                )
                if len(owned) != len(wanted):
                    raise NotFound("keys: an agent named is not one of this account's")
            stored = await WrappedKey.select(WrappedKey.agent).where(
                WrappedKey.user == agent.user_id
            )
            left_out = {r["agent"] for r in stored} - set(wanted)
            if left_out:
                raise Conflict(
                    f"keys: {len(left_out)} stored wrapped key(s) are not re-wrapped; every one "
                    "must be, or it would be lost",
                    extra={"missing": sorted(str(a) for a in left_out)},
                )
            changed = (
                await RecoveryKey.update(
                    {
                        RecoveryKey.public_key: public_key,
                        RecoveryKey.salt: salt,
                        RecoveryKey.kdf: kdf,
                        RecoveryKey.proof_digest: digest,
                        RecoveryKey.version: old_version + 1,
                        RecoveryKey.rotated_at: now,
                    }
                )
                .where(RecoveryKey.user == agent.user_id, RecoveryKey.version == old_version)
                .returning(RecoveryKey.id)
            )
            if not changed:
                raise Conflict("the recovery key was rotated meanwhile; start again")
            await WrappedKey.delete().where(WrappedKey.user == agent.user_id)
            if wanted:
                await WrappedKey.insert(
                    *(
                        WrappedKey(
                            agent=aid,
                            user=agent.user_id,
                            wrapped=text,
                            version=old_version + 1,
                            updated_at=now,
                        )
                        for aid, text in wanted.items()
                    )
                )
        return await self.state(agent.user_id, agent.id)

    async def put_key(self, agent: AgentIdentity, *, wrapped_key: str, version: int) -> int:
        """Store the agent's own wrapped key for recovery key ``version``; ``Conflict`` when
        recovery is not set up or ``version`` is not the current one."""
        check_wrapped(wrapped_key)
        current = (
            await RecoveryKey.select(RecoveryKey.version)
            .where(RecoveryKey.user == agent.user_id)
            .first()
        )
        _at_version(
            current,
            version,
            unset="run `recovery init` first",
            stale="wrap the key for the current one",
        )
        async with write_transaction():
            await store_wrapped_key(agent, wrapped_key, version, self.clock())
        return version

    async def get_key(self, agent: AgentIdentity, agent_id: str | None) -> RepoKeyOut:
        """The wrapped key of an agent ``agent`` may read (``readable_agent``)."""
        target = await readable_agent(agent, agent_id)
        found = await self._keys(agent.user_id, target)
        if not found:
            raise NotFound("no wrapped repository key stored for that agent")
        return found[0]

    async def list_keys(self, agent: AgentIdentity) -> list[RepoKeyOut]:
        """Every wrapped key of the agent's user, for a rotation (each opens only with the code)."""
        return await self._keys(agent.user_id, None)

    async def _keys(self, user_id: uuid.UUID, agent_id: uuid.UUID | None) -> list[RepoKeyOut]:
        query = WrappedKey.select(
            WrappedKey.agent,
            WrappedKey.agent.name.as_alias("agent_name"),
            WrappedKey.wrapped,
            WrappedKey.version,
            WrappedKey.updated_at,
        ).where(WrappedKey.user == user_id)
        if agent_id is not None:
            query = query.where(WrappedKey.agent == agent_id)
        rows = await query.order_by(WrappedKey.agent)
        return [
            RepoKeyOut(
                agent_id=str(r["agent"]),
                agent_name=r["agent_name"] or "",
                wrapped_key=r["wrapped"],
                version=r["version"],
                updated_at=iso(r["updated_at"]) or "",
            )
            for r in rows
        ]


async def store_wrapped_key(
    agent: AgentIdentity, wrapped_key: str, version: int, now: datetime
) -> None:
    """Keep ``wrapped_key`` (for recovery key ``version``) as the agent's own, replacing any
    earlier one. Call it inside a transaction."""
    await store_wrapped(WrappedKey, agent.id, wrapped_key, version, now, user=agent.user_id)
