"""Agents: registration, status, keys and logs, as their owner manages them.

The agent hot path (API-key authentication, the heartbeat buffer, the rate limiter) is
``backend.services.agent_registry``; ``AgentIdentity`` and ``AgentRegistry`` are re-exported here.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msgspec import UNSET
from piccolo.columns import Column
from piccolo.columns.combination import WhereRaw
from piccolo.custom_types import Combinable
from piccolo.table import Table

from backend.agents.tables import Agent, AgentLog
from backend.backups.tables import BackupConfig
from backend.errors import InvalidInput, NotFound
from backend.schemas import AgentLogOut, AgentOut, AgentStatus
from backend.security import api_key_digest, new_api_key
from backend.services.accounts import CurrentUser
from backend.services.agent_configs import configs_of_agents
from backend.services.agent_registry import MAX_KEY_LENGTH, AgentIdentity, AgentRegistry
from backend.services.alerts import oneshot_expected_by
from backend.services.clock import aware, iso, utcnow
from backend.services.cursors import Cursor, keyset_page, name_contains
from backend.services.last_backup import refresh_severity
from backend.services.limits import check_limits, check_parallel_backups, stored_limits
from backend.services.presence import ONESHOT, PlanMemo
from backend.settings import Settings

__all__ = [
    "AgentBrief",
    "AgentIdentity",
    "AgentRegistry",
    "AgentService",
    "agents_row",
    "assigned_config",
    "compute_status",
    "filter_uuid",
    "parse_uuid",
    "users_row",
]

log = logging.getLogger("backapp.agents")

MAX_METADATA_BYTES = 64 * 1024


def compute_status(
    *,
    active: bool,
    last_seen: datetime | None,
    now: datetime,
    offline_after: float,
    expected_by: datetime | None = None,
) -> AgentStatus:
    """``online`` while it beats (heard within ``offline_after``); ``offline`` when deactivated,
    never seen, or silent too long. A one-shot agent (``expected_by``: when it should be back, see
    :mod:`backend.services.presence`) is ``idle`` between its runs until then, not offline.

    A failed backup does not change it: the agent's status is about the agent; a config's problems
    show on the config."""
    last_seen = aware(last_seen)
    if not active or last_seen is None:
        return "offline"
    if (now - last_seen).total_seconds() <= offline_after:
        return "online"
    if expected_by is not None and now <= expected_by:
        return "idle"
    return "offline"


@dataclass(frozen=True)
class AgentBrief:
    """An agent as the dashboard counts it."""

    id: str
    name: str
    active: bool
    status: AgentStatus
    last_seen: str | None
    created_at: str = ""


OUT_COLUMNS: tuple[Column, ...] = tuple(
    Agent._meta.get_column_by_name(name)
    for name in "id name active platform version last_seen api_key_prefix created_at mode timezone"
    " limits parallel_backups".split()
)
"""What an agent as its owner sees it is made of (lists read these, not the whole row)."""


def _agent_out(
    row: dict[str, Any],
    registry: AgentRegistry,
    settings: Settings,
    configs: list[dict[str, Any]],
    now: datetime | None = None,
    memo: PlanMemo | None = None,
) -> AgentOut:
    """An agent row (with at least :data:`OUT_COLUMNS`) as the owner sees it; ``configs`` are
    its configs' ``id`` and ``options``; ``now`` and ``memo``: one for a whole list (the time
    statuses are worked out at; the one-shot agents' schedules)."""
    last_seen = registry.last_seen(row["id"], row["last_seen"])
    expected_by = (
        oneshot_expected_by(aware(last_seen) or last_seen, row["timezone"], configs, settings, memo)
        if row["mode"] == ONESHOT and last_seen is not None
        else None
    )
    return AgentOut(
        id=str(row["id"]),
        name=row["name"],
        status=compute_status(
            active=bool(row["active"]),
            last_seen=last_seen,
            now=now or utcnow(),
            offline_after=settings.offline_after_seconds,
            expected_by=expected_by,
        ),
        active=bool(row["active"]),
        platform=row["platform"],
        version=row["version"],
        last_seen=iso(last_seen),
        api_key_prefix=row["api_key_prefix"],
        created_at=iso(row["created_at"]) or "",
        config_ids=[str(c["id"]) for c in configs],
        mode=row["mode"] if row["mode"] in ("daemon", "tray", "oneshot") else None,
        expected_by=iso(expected_by),
        limits=stored_limits(row["limits"]),
        parallel_backups=row["parallel_backups"],
    )


def parse_uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    """An id in a path: one that is not a UUID names nothing, so :class:`NotFound`."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{what} not found") from None


def filter_uuid(value: str, name: str) -> uuid.UUID:
    """An id given as a filter (``?configId=``): one that is not a UUID is a bad request."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput(f"{name}: not a valid id", field=name) from None


async def agents_row(
    table: type[Table],
    agent: AgentIdentity,
    row_id: uuid.UUID,
    missing: str,
    *columns: Column,
    also: Combinable | None = None,
) -> dict[str, Any]:
    """The row ``row_id`` of ``table`` whose ``agent`` and ``user`` are ``agent``'s (and that meets
    ``also``), with ``columns`` (all without); else ``NotFound(missing)``: a row of another agent
    or user is not revealed."""
    meta = table._meta
    where = (
        (meta.primary_key == row_id)
        & (meta.get_column_by_name("agent") == agent.id)
        & (meta.get_column_by_name("user") == agent.user_id)
    )
    row: dict[str, Any] | None = (
        await table.select(*columns).where(where if also is None else where & also).first()
    )
    if row is None:
        raise NotFound(missing)
    return row


async def users_row(
    table: type[Table], user: CurrentUser, row_id: str | uuid.UUID, what: str, *columns: Column
) -> dict[str, Any]:
    """The row ``row_id`` of ``table`` (with ``columns``; all without) when its ``user`` is
    ``user``, else ``NotFound("<what> not found")``: another user's row is not revealed."""
    meta = table._meta
    row: dict[str, Any] | None = (
        await table.select(*columns)
        .where(
            (meta.primary_key == parse_uuid(row_id, what))
            & (meta.get_column_by_name("user") == user.id)
        )
        .first()
    )
    if row is None:
        raise NotFound(f"{what} not found")
    return row


async def assigned_config(agent: AgentIdentity, config_id: str) -> tuple[uuid.UUID, str]:
    """The id and name of config ``config_id`` when it is assigned to ``agent`` and runs on agents;
    else :class:`NotFound` (a config of another agent or user is not revealed)."""
    missing = "configId: no such config assigned to this agent"
    try:
        cid = uuid.UUID(config_id)
    except ValueError:
        raise NotFound(missing) from None
    config = await agents_row(
        BackupConfig,
        agent,
        cid,
        missing,
        BackupConfig.name,
        also=BackupConfig.execution_mode == "agent",
    )
    return cid, str(config["name"])


class AgentService:
    def __init__(self, settings: Settings, registry: AgentRegistry) -> None:
        self.settings = settings
        self.registry = registry

    async def register(
        self, user: CurrentUser, name: str, platform: str | None
    ) -> tuple[AgentOut, str]:
        name = name.strip()
        if not name:
            raise InvalidInput("name: must not be blank", field="name")
        key = new_api_key()
        now = utcnow()
        agent = Agent(
            id=uuid.uuid4(),
            user=user.id,
            name=name,
            api_key_digest=api_key_digest(self.settings.secret_key, key),
            api_key_prefix=key[:10],
            active=True,
            platform=platform,
            created_at=now,
            updated_at=now,
        )
        await agent.save()
        return await self.get(user, agent.id), key

    async def _row(self, user: CurrentUser, agent_id: str | uuid.UUID) -> dict[str, Any]:
        return await users_row(Agent, user, agent_id, "agent")

    async def _outs(self, rows: list[dict[str, Any]]) -> list[AgentOut]:
        configs = await configs_of_agents(rows)
        now, memo = utcnow(), PlanMemo()
        return [
            _agent_out(r, self.registry, self.settings, configs[r["id"]], now, memo) for r in rows
        ]

    async def list_agents(self, user: CurrentUser) -> list[AgentOut]:
        rows = (
            await Agent.select(*OUT_COLUMNS)
            .where(Agent.user == user.id)
            .order_by(Agent.created_at, Agent.id)
        )
        return await self._outs(rows)

    async def page_agents(
        self,
        user: CurrentUser,
        *,
        search: str | None = None,
        after: Cursor | None = None,
        limit: int = 50,
    ) -> tuple[list[AgentOut], Cursor | None]:
        """One page of this user's agents, oldest first (the order of :meth:`list_agents`), after
        ``after``; and the cursor of the next page, None on the last one. ``search`` matches a
        part of the name, ignoring case."""
        where: Combinable = Agent.user == user.id
        if search:
            where = where & name_contains("name", search)
        rows, next_cursor = await keyset_page(
            Agent, where, Agent.created_at, after, limit, newest_first=False, columns=OUT_COLUMNS
        )
        return await self._outs(rows), next_cursor

    async def by_ids(self, user: CurrentUser, agent_ids: list[str]) -> list[AgentOut]:
        """These agents of this user (unknown or foreign ids are left out)."""
        ids = [uuid.UUID(a) for a in agent_ids]
        if not ids:
            return []
        rows = (
            await Agent.select(*OUT_COLUMNS)
            .where((Agent.user == user.id) & Agent.id.is_in(ids))
            .order_by(Agent.created_at, Agent.id)
        )
        return await self._outs(rows)

    async def briefs(
        self,
        user: CurrentUser,
        *,
        silent_since: datetime | None = None,
        limit: int | None = None,
        oneshot: bool | None = None,
        marked: bool | None = None,
        ids: Iterable[str | None] | None = None,
    ) -> list[AgentBrief]:
        """This user's agents with only their name and status (one narrow query), oldest first.

        ``silent_since``: only those that may not be online (deactivated, never seen, or not
        seen in the database since then), a superset of those that are not: the dashboard reads
        O(problems) agents, not the fleet. ``oneshot``: only the active one-shot agents seen
        once (True: whether they are idle or offline depends on their schedules), or only the
        others (False: silent means offline). ``marked``: only those the presence round marked
        offline (True) or only the others (False; ``services/offline.py``). ``ids``: only these
        (unknown or foreign ids are left out). ``limit``: at most that many."""
        where: Combinable = Agent.user == user.id
        if ids is not None:
            wanted = sorted({uuid.UUID(a) for a in ids if a}, key=lambda u: u.int)
            if not wanted:
                return []
            where = where & Agent.id.is_in(wanted)
        if silent_since is not None:
            where = where & (
                (Agent.active == False)  # noqa: E712 (a SQL comparison)
                | Agent.last_seen.is_null()
                | (Agent.last_seen < silent_since)
            )
        if oneshot is not None:
            if oneshot:
                # A range of the ``("user", mode, last_seen)`` index. SQLite's statistics do not
                # say that one-shot agents are rare, and it would rather walk the list order over
                # every agent for the page: ``unlikely`` tells it (PostgreSQL knows it already).
                sqlite = getattr(Agent._meta.db, "engine_type", "") == "sqlite"
                mode = "unlikely(mode = {})" if sqlite else "mode = {}"
                cron = f"active = {{}} AND {mode} AND last_seen IS NOT NULL"
            else:  # the others, an agent that never said its mode (null) among them
                cron = "NOT (active = {} AND COALESCE(mode, '') = {} AND last_seen IS NOT NULL)"
            where = where & WhereRaw(cron, True, ONESHOT)
        if marked is not None:
            where = where & (
                Agent.offline_since.is_not_null() if marked else Agent.offline_since.is_null()
            )
        query = (
            Agent.select(
                Agent.id,
                Agent.name,
                Agent.active,
                Agent.last_seen,
                Agent.mode,
                Agent.timezone,
                Agent.created_at,
            )
            .where(where)
            .order_by(Agent.created_at, Agent.id)
        )
        if limit is not None:
            query = query.limit(limit)
        rows = await query
        # Only one-shot agents need their configs (when they are due back): one query for those.
        configs = await configs_of_agents([r for r in rows if r["mode"] == ONESHOT])
        now, memo = utcnow(), PlanMemo()
        out = []
        for row in rows:
            last_seen = self.registry.last_seen(row["id"], row["last_seen"])
            expected_by = (
                oneshot_expected_by(
                    aware(last_seen) or last_seen,
                    row["timezone"],
                    configs.get(row["id"], []),
                    self.settings,
                    memo,
                )
                if row["mode"] == ONESHOT and last_seen is not None
                else None
            )
            out.append(
                AgentBrief(
                    id=str(row["id"]),
                    name=row["name"],
                    active=bool(row["active"]),
                    status=compute_status(
                        active=bool(row["active"]),
                        last_seen=last_seen,
                        now=now,
                        offline_after=self.settings.offline_after_seconds,
                        expected_by=expected_by,
                    ),
                    last_seen=iso(last_seen),
                    created_at=iso(row["created_at"]) or "",
                )
            )
        return out

    async def count_silent(self, user: CurrentUser, silent_since: datetime) -> tuple[int, int]:
        """How many agents this user has, and how many of them are deactivated, or active and
        not heard from in the database since ``silent_since`` (or never): one statement over
        four ranges of the ``("user", active, last_seen)`` index, read from the index alone."""
        where = 'FROM backapp_agent WHERE "user" = {} AND active = {}'
        [row] = await Agent.raw(
            'SELECT (SELECT COUNT(*) FROM backapp_agent WHERE "user" = {}) AS total,'
            f" (SELECT COUNT(*) {where}) + (SELECT COUNT(*) {where} AND last_seen IS NULL)"
            f" + (SELECT COUNT(*) {where} AND last_seen < {{}}) AS n",
            user.id,
            *(user.id, False),
            *(user.id, True),
            *(user.id, True, silent_since),
        )
        return int(row["total"]), int(row["n"])

    async def online_briefs(
        self, user: CurrentUser, seen_since: datetime, limit: int
    ) -> list[AgentBrief]:
        """The oldest ``limit`` active agents seen in the database since ``seen_since`` (online,
        whatever this process has heard since)."""
        rows = (
            await Agent.select(Agent.id, Agent.name, Agent.active, Agent.last_seen)
            .where(
                (Agent.user == user.id)
                & (Agent.active == True)  # noqa: E712 (a SQL comparison)
                & (Agent.last_seen >= seen_since)
            )
            .order_by(Agent.created_at, Agent.id)
            .limit(limit)
        )
        return [
            AgentBrief(
                id=str(r["id"]),
                name=r["name"],
                active=True,
                status="online",
                last_seen=iso(self.registry.last_seen(r["id"], r["last_seen"])),
            )
            for r in rows
        ]

    async def has_agents(self, user: CurrentUser) -> bool:
        return bool(await Agent.exists().where(Agent.user == user.id))

    async def get(self, user: CurrentUser, agent_id: str | uuid.UUID) -> AgentOut:
        row = await self._row(user, agent_id)
        configs = await configs_of_agents([row])
        return _agent_out(row, self.registry, self.settings, configs[row["id"]])

    async def key_matches(self, user: CurrentUser, agent_id: str, api_key: str) -> bool:
        """Whether ``api_key`` is this agent's key (the page that shows a new key once uses it to
        accept only the real key back from the browser). Constant-time; never raises NotFound."""
        if not api_key or len(api_key) > MAX_KEY_LENGTH:
            return False
        try:
            row = await self._row(user, agent_id)
        except NotFound:
            return False
        digest = api_key_digest(self.settings.secret_key, api_key)
        return hmac.compare_digest(digest, row["api_key_digest"])

    async def update(
        self,
        user: CurrentUser,
        agent_id: str,
        *,
        name: str | None,
        active: bool | None,
        limits: Any = UNSET,
        parallel_backups: Any = UNSET,
    ) -> AgentOut:
        """Rename, (de)activate, or set the bandwidth ``limits`` or ``parallel_backups`` (``UNSET``:
        leave them; ``None``: remove them). Bad input is a 400 and changes nothing."""
        row = await self._row(user, agent_id)
        values: dict[Any, Any] = {}
        if limits is not UNSET:
            values[Agent.limits] = check_limits(limits, "limits")
        if parallel_backups is not UNSET:
            values[Agent.parallel_backups] = check_parallel_backups(parallel_backups)
        if name is not None:
            name = name.strip()
            if not name:
                raise InvalidInput("name: must not be blank", field="name")
            values[Agent.name] = name
        if active is not None:
            values[Agent.active] = active
        if values:
            values[Agent.updated_at] = utcnow()
            await Agent.update(values).where(Agent.id == row["id"])
            if Agent.name in values or Agent.active in values:
                await self.registry.revoked(row["id"])
            if Agent.active in values:  # its configs are blocked, or no longer
                await refresh_severity("agent = {}", row["id"])
        return await self.get(user, row["id"])

    async def delete(self, user: CurrentUser, agent_id: str) -> None:
        row = await self._row(user, agent_id)
        await Agent.delete().where(Agent.id == row["id"])
        await self.registry.revoked(row["id"])
        # Its configs lost their agent (the key is set null): they are blocked now.
        await refresh_severity(
            "\"user\" = {} AND agent IS NULL AND execution_mode = 'agent' AND severity > 1",
            user.id,
        )

    async def logs(
        self,
        user: CurrentUser,
        agent_id: str,
        *,
        level: str | None,
        limit: int,
        before: datetime | None,
    ) -> tuple[list[AgentLogOut], str | None]:
        row = await self._row(user, agent_id)
        where: Combinable = AgentLog.agent == row["id"]
        if level:
            where = where & (AgentLog.level == level)
        if before is not None:
            where = where & (AgentLog.timestamp < before)
        rows = (
            await AgentLog.select()
            .where(where)
            .order_by(AgentLog.timestamp, ascending=False)
            .limit(limit + 1)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        out = [_log_out(r) for r in rows]
        return out, (out[-1].timestamp if more and out else None)

    async def page_logs(
        self,
        user: CurrentUser,
        agent_id: str,
        *,
        level: str | None,
        limit: int,
        after: Cursor | None,
    ) -> tuple[list[AgentLogOut], Cursor | None]:
        """One page of an agent's log, newest first, after ``after`` (keyset on ``(timestamp,
        id)``, the ``(agent, timestamp, id)`` index: lines logged in the same instant are neither
        skipped nor repeated, and a deep page costs what the first does); and the next cursor."""
        row = await self._row(user, agent_id)
        where: Combinable = AgentLog.agent == row["id"]
        if level:
            where = where & (AgentLog.level == level)
        rows, next_cursor = await keyset_page(
            AgentLog, where, AgentLog.timestamp, after, limit, newest_first=True
        )
        return [_log_out(r) for r in rows], next_cursor

    async def add_log(
        self, agent: AgentIdentity, level: str, message: str, metadata: dict[str, Any] | None
    ) -> None:
        if metadata is not None and len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise InvalidInput(
                f"metadata: at most {MAX_METADATA_BYTES // 1024} KiB of JSON", field="metadata"
            )
        await AgentLog(
            id=uuid.uuid4(),
            agent=agent.id,
            level=level,
            message=message,
            metadata=metadata,
            timestamp=utcnow(),
        ).save()


def _log_out(row: dict[str, Any]) -> AgentLogOut:
    return AgentLogOut(
        id=str(row["id"]),
        level=row["level"],
        message=row["message"],
        metadata=_as_json(row["metadata"]),
        timestamp=iso(row["timestamp"]) or "",
    )


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
