"""Inheriting an agent: the owner's mark that a new machine replaces an old one, and what it lets
the new machine read.

A mark ``NEW inherits OLD`` (both agents of one user) lets NEW list OLD's backups, get a download
URL for OLD's ``full`` archives and read OLD's snapshot repository (pre-signed GETs only: the keys
stay under ``users/{user}/agents/{OLD}/``, and nothing lets NEW write there). Marks chain: a
machine that replaced one that had itself replaced another reads both. Without a mark every such
request is a 404, as for an id that does not exist, so an agent learns nothing about its siblings.

The rest of the server asks :func:`readable_agent_ids` (or :func:`may_read`); the owner's
endpoints use :class:`InheritanceService`. Deleting either agent deletes the mark (the foreign
keys cascade), so a deleted agent is never readable.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

from piccolo.custom_types import Combinable

from backend.agents.tables import Agent, AgentInheritance
from backend.errors import Conflict, InvalidInput, NotFound
from backend.inheritance_schemas import InheritanceOut
from backend.repos.tables import Repository
from backend.services.accounts import CurrentUser
from backend.services.agent_registry import AgentIdentity
from backend.services.clock import iso, utcnow
from backend.services.cursors import name_contains

__all__ = [
    "MAX_CHAIN",
    "InheritanceService",
    "may_read",
    "readable_agent_ids",
    "reader_agent_ids",
    "repository_reader",
    "target_agent",
]

MAX_CHAIN = 32
"""How many replacements deep a chain is followed (old → newer → newest …): far more than any
real history of one seat, and a bound on the queries one check may run."""


async def readable_agent_ids(user_id: uuid.UUID, agent_id: uuid.UUID) -> set[uuid.UUID]:
    """The agents whose backups ``agent_id`` may read: itself and every agent it inherits,
    directly or through a chain of marks. Deleted agents are not in it (their marks went with
    them). One indexed query per step of the chain, never one per row."""
    return await _chain(user_id, agent_id, AgentInheritance.agent, AgentInheritance.from_agent)


async def reader_agent_ids(user_id: uuid.UUID, agent_id: uuid.UUID) -> set[uuid.UUID]:
    """The other way round: the agents that may read ``agent_id``'s backups (itself and every agent
    that inherits it, directly or through a chain). One indexed query per step of the chain."""
    return await _chain(user_id, agent_id, AgentInheritance.from_agent, AgentInheritance.agent)


async def _chain(user_id: uuid.UUID, agent_id: uuid.UUID, near: Any, far: Any) -> set[uuid.UUID]:
    """``agent_id`` and every agent reached by following marks from their ``near`` end to their
    ``far`` end, at most ``MAX_CHAIN`` steps."""
    seen = {agent_id}
    frontier = {agent_id}
    for _ in range(MAX_CHAIN):
        rows = await AgentInheritance.select(far).where(
            (AgentInheritance.user == user_id) & near.is_in(sorted(frontier))
        )
        frontier = {r[far._meta.name] for r in rows} - seen
        if not frontier:
            break
        seen |= frontier
    return seen


async def may_read(agent: AgentIdentity, target_agent_id: uuid.UUID) -> bool:
    """Whether ``agent`` may read the backups and repository of ``target_agent_id``."""
    if target_agent_id == agent.id:
        return True
    return target_agent_id in await readable_agent_ids(agent.user_id, agent.id)


def _no_agent(field: str) -> NotFound:
    return NotFound(f"{field}: no such agent whose backups this agent may read")


async def target_agent(
    agent: AgentIdentity, value: str | None, field: str = "agentId"
) -> uuid.UUID:
    """The agent an agent-API request names (``agentId``; this agent when absent), once it is
    readable by ``agent``; else :class:`NotFound` (never 403: another agent's existence is not
    confirmed)."""
    if value is None or value == "":
        return agent.id
    try:
        wanted = uuid.UUID(value)
    except ValueError:
        raise _no_agent(field) from None
    if not await may_read(agent, wanted):
        raise _no_agent(field)
    return wanted


async def repository_reader(agent: AgentIdentity, value: str | None) -> AgentIdentity:
    """The identity to read a repository as: ``agent`` itself, or (with ``agentId``) the agent it
    inherits, whose repository must exist (reading never makes one for another agent)."""
    wanted = await target_agent(agent, value)
    if wanted == agent.id:
        return agent
    if await Repository.exists().where(Repository.agent == wanted):
        return dataclasses.replace(agent, id=wanted)
    # Its repository may have been continued by a newer machine (docs/recovery.md): the old
    # snapshots are there now, read as that machine's, when it is ``agent`` or one it inherits.
    row = (
        await Repository.select(Repository.agent)
        .where((Repository.prefix_agent == wanted) & (Repository.user == agent.user_id))
        .first()
    )
    if row is not None and await may_read(agent, row["agent"]):
        return agent if row["agent"] == agent.id else dataclasses.replace(agent, id=row["agent"])
    raise NotFound("agentId: that agent has no snapshot repository")


def _out(row: dict[str, Any], names: dict[uuid.UUID, str]) -> InheritanceOut:
    return InheritanceOut(
        agent_id=str(row["agent"]),
        agent_name=names.get(row["agent"], ""),
        from_agent_id=str(row["from_agent"]),
        from_agent_name=names.get(row["from_agent"], ""),
        created_at=iso(row["created_at"]) or "",
        created_by=str(row["created_by"]) if row["created_by"] else None,
    )


def _path_id(value: str | uuid.UUID, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{field}: agent not found") from None


class InheritanceService:
    """The owner's side: mark, unmark and show which machine replaces which."""

    async def _names(self, user: CurrentUser, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await Agent.select(Agent.id, Agent.name).where(
            (Agent.user == user.id) & Agent.id.is_in(wanted)
        )
        return {r["id"]: r["name"] for r in rows}

    async def mark(
        self, user: CurrentUser, agent_id: str, from_agent_id: str
    ) -> tuple[InheritanceOut, bool]:
        """Mark that ``agent_id`` replaces ``from_agent_id``; the mark, and whether it is new (a
        repeated mark changes nothing). 404 for an agent that is not this user's (or was
        deleted), 400 for the agent itself, 409 when it would make a cycle."""
        new = _path_id(agent_id, "agent")
        old = _path_id(from_agent_id, "fromAgentId")
        names = await self._names(user, [new, old])
        if new not in names:
            raise NotFound("agent not found")
        if new == old:
            raise InvalidInput(
                "fromAgentId: a machine cannot replace itself; give the id of the old machine",
                field="fromAgentId",
            )
        if old not in names:
            raise NotFound(
                "fromAgentId: no such agent of yours (a deleted agent cannot be inherited)"
            )
        existing = await self._row(new, old)
        if existing is not None:
            return _out(existing, names), False
        if new in await readable_agent_ids(user.id, old):
            raise Conflict(
                f"fromAgentId: “{names[old]}” already replaces “{names[new]}” (directly or "
                "through other machines); a machine cannot replace one that replaces it"
            )
        await AgentInheritance.insert(
            AgentInheritance(
                id=uuid.uuid4(),
                user=user.id,
                agent=new,
                from_agent=old,
                created_by=user.id,
                created_at=utcnow(),
            )
        ).on_conflict(action="DO NOTHING")
        row = await self._row(new, old)
        assert row is not None
        return _out(row, names), True

    async def _row(self, new: uuid.UUID, old: uuid.UUID) -> dict[str, Any] | None:
        row: dict[str, Any] | None = (
            await AgentInheritance.select()
            .where((AgentInheritance.agent == new) & (AgentInheritance.from_agent == old))
            .first()
        )
        return row

    async def unmark(self, user: CurrentUser, agent_id: str, from_agent_id: str) -> None:
        """Remove the mark (nothing to do when there is none); 404 for agents of another user.
        The new machine at once stops getting URLs for the old one's objects (URLs it already
        holds expire as usual)."""
        new = _path_id(agent_id, "agent")
        old = _path_id(from_agent_id, "fromAgentId")
        names = await self._names(user, [new, old])
        if new not in names:
            raise NotFound("agent not found")
        if old not in names:
            raise NotFound("fromAgentId: agent not found")
        await AgentInheritance.delete().where(
            (AgentInheritance.user == user.id)
            & (AgentInheritance.agent == new)
            & (AgentInheritance.from_agent == old)
        )

    async def marks(
        self, user: CurrentUser, agent_id: str | uuid.UUID
    ) -> tuple[list[InheritanceOut], list[InheritanceOut]]:
        """The machines ``agent_id`` replaces, and those that replace it (direct marks)."""
        aid = _path_id(agent_id, "agent")
        if not await self._names(user, [aid]):
            raise NotFound("agent not found")
        rows = (
            await AgentInheritance.select()
            .where(
                (AgentInheritance.user == user.id)
                & ((AgentInheritance.agent == aid) | (AgentInheritance.from_agent == aid))
            )
            .order_by(AgentInheritance.created_at)
        )
        names = await self._names(
            user, [r["agent"] for r in rows] + [r["from_agent"] for r in rows]
        )
        inherits = [_out(r, names) for r in rows if r["agent"] == aid]
        inherited_by = [_out(r, names) for r in rows if r["from_agent"] == aid]
        return inherits, inherited_by

    async def candidates(
        self, user: CurrentUser, agent_id: str | uuid.UUID, search: str, limit: int = 10
    ) -> list[dict[str, Any]]:
        """Agents of this user whose name contains ``search`` (ignoring case), other than
        ``agent_id`` (or the one whose id it is): what the page's "This machine replaces…" search offers (a fleet is too large
        for a list of every agent). Each ``{"id", "name", "platform", "lastSeen"}``."""
        aid = _path_id(agent_id, "agent")
        text = search.strip()
        if not text:
            return []
        match: Combinable
        try:  # a pasted id finds that agent
            match = Agent.id == uuid.UUID(text)
        except ValueError:
            match = name_contains("name", text)
        rows = (
            await Agent.select(Agent.id, Agent.name, Agent.platform, Agent.last_seen)
            .where((Agent.user == user.id) & (Agent.id != aid) & match)
            .order_by(Agent.name)
            .limit(limit)
        )
        return [
            {
                "id": str(r["id"]),
                "name": r["name"],
                "platform": r["platform"],
                "lastSeen": iso(r["last_seen"]),
            }
            for r in rows
        ]
