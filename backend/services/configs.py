"""Backup configurations: what to back up, where it runs, and how."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from piccolo.custom_types import Combinable

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig
from backend.db import as_uuid, json_value
from backend.errors import Forbidden, InvalidInput
from backend.schemas import (
    AgentConfig,
    ConfigIn,
    ConfigOut,
    ConfigPatch,
    Destination,
    Options,
    Source,
)
from backend.services.accounts import CurrentUser
from backend.services.agents import filter_uuid, parse_uuid, users_row
from backend.services.clock import iso, utcnow
from backend.services.cursors import Cursor, keyset_page, name_contains
from backend.services.keys import config_prefix
from backend.services.last_backup import refresh_severity
from backend.services.limits import check_limits
from backend.services.server_side import check_server_sources
from backend.settings import Settings
from backend.storage import Storage
from desktop_agent.engine.schedule import Schedule, ScheduleError

__all__ = ["ConfigService"]


def _check_sources(sources: list[Source]) -> None:
    for i, source in enumerate(sources):
        if not source.path.strip():
            raise InvalidInput(f"sources[{i}].path: must not be blank", field="sources")
        if "\x00" in source.path:
            raise InvalidInput(f"sources[{i}].path: contains a NUL character", field="sources")


def _check_kind(options: Options, mode: str) -> None:
    if options.type == "incremental" and mode == "server":
        raise InvalidInput(
            "type: incremental backups (snapshots) are made by agents; a server-side "
            'configuration makes "full" archives',
            field="type",
        )
    if mode == "server" and (options.pre_command or options.post_command or options.snapshot):
        # Commands and volume snapshots run on the machine being backed up: an agent, which
        # decides itself whether it allows them; never the server's own host.
        raise InvalidInput(
            "preCommand, postCommand and snapshot run on an agent's machine; a server-side "
            "configuration cannot have them",
            field="preCommand"
            if options.pre_command
            else "postCommand"
            if options.post_command
            else "snapshot",
        )
    if options.encryption and mode == "server":
        # The agent encrypts with its own key (docs/recovery.md); the server has none, and
        # promising encryption while uploading plaintext would be worse than refusing.
        raise InvalidInput(
            "encryption: encrypted archives are made by agents, with their own key; a "
            "server-side configuration cannot encrypt (leave it off: the bucket's server-side "
            "encryption still applies)",
            field="encryption",
        )
    if options.drill is not None and options.type != "incremental":
        raise InvalidInput(
            "drill: a restore drill restores a sample of files from a snapshot; this "
            f'configuration makes "{options.type}" archives (set options.type to "incremental", '
            "or leave drill out)",
            field="drill",
        )


def _check_options(options: Options) -> Options:
    """Refuse what cannot be honoured; returns the options with ``schedule`` normalised."""
    try:
        schedule = Schedule.parse(options.schedule)
    except ScheduleError as exc:
        raise InvalidInput(f"schedule: {exc}", field="schedule") from None
    options = msgspec.structs.replace(
        options,
        schedule=schedule.to_json() if schedule is not None else None,
        limits=check_limits(options.limits, "limits"),
    )
    return options


OUT_COLUMNS = (
    BackupConfig.id,
    BackupConfig.user,
    BackupConfig.name,
    BackupConfig.execution_mode,
    BackupConfig.agent,
    BackupConfig.sources,
    BackupConfig.excludes,
    BackupConfig.options,
    BackupConfig.created_at,
    BackupConfig.updated_at,
)
"""What a config as the owner sees it is made of (lists read these, not the whole row)."""
_SOURCES = msgspec.json.Decoder(list[Source])
_OPTIONS = msgspec.json.Decoder(Options)


def _sources(value: Any) -> list[Source]:
    if isinstance(value, str):  # SQLite's and asyncpg's JSON: text, decoded into the structs
        return _SOURCES.decode(value)
    return msgspec.convert(value, list[Source])


def _options(value: Any) -> Options:
    """Stored options; absent ones (``null``, ``{}``) are the defaults."""
    if isinstance(value, str):
        try:
            return _OPTIONS.decode(value)
        except msgspec.ValidationError:
            pass  # not an object (null): as below, which also raises what it always raised
    return msgspec.convert(json_value(value) or {}, Options, from_attributes=False)


class ConfigService:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage

    def _out(self, row: dict[str, Any]) -> ConfigOut:
        return self._outs([row])[0]

    def _outs(self, rows: list[dict[str, Any]]) -> list[ConfigOut]:
        """Config rows (with at least :data:`OUT_COLUMNS`) as the owner sees them.

        A list's cost is per row, so the JSON columns are decoded straight into their structs
        (one pass in C instead of a dict, then a conversion), and a page's configs that store the
        same options text (configs made from one template) share one decoded ``Options``."""
        bucket, region = self.storage.bucket, self.storage.region
        options_of: dict[str, Options] = {}
        out = []
        users: dict[Any, str] = {}  # the rows' owner (one for a page): its id as text once
        for row in rows:
            config_id, agent = str(row["id"]), row["agent"]
            agent_id = str(agent) if agent else None
            user_id = users.get(row["user"]) or users.setdefault(row["user"], str(row["user"]))
            text = row["options"]
            options = options_of.get(text) if isinstance(text, str) else None
            if options is None:
                options = _options(text)
                if isinstance(text, str):
                    options_of[text] = options
            out.append(
                ConfigOut(
                    id=config_id,
                    name=row["name"],
                    execution_mode=row["execution_mode"],
                    agent_id=agent_id,
                    sources=_sources(row["sources"]),
                    excludes=list(json_value(row["excludes"]) or []),
                    destination=Destination(
                        bucket=bucket,
                        region=region,
                        prefix=config_prefix(
                            user_id=user_id, agent_id=agent_id, config_id=config_id
                        ),
                    ),
                    options=options,
                    created_at=iso(row["created_at"]) or "",
                    updated_at=iso(row["updated_at"]) or "",
                )
            )
        return out

    async def _agent_for(
        self, user: CurrentUser, mode: str, agent_id: str | None
    ) -> uuid.UUID | None:
        if mode == "server":
            if agent_id:
                raise InvalidInput(
                    "agentId: a server-side config runs on the server; leave agentId empty "
                    "or choose executionMode 'agent'",
                    field="agentId",
                )
            return None
        if not agent_id:
            raise InvalidInput(
                "agentId: an agent-based config needs the agent that runs it", field="agentId"
            )
        try:
            aid = uuid.UUID(agent_id)
        except ValueError:
            raise InvalidInput("agentId: not a valid id", field="agentId") from None
        if not await Agent.exists().where((Agent.id == aid) & (Agent.user == user.id)):
            raise InvalidInput("agentId: no such agent", field="agentId")
        return aid

    def _check_server_mode(self, user: CurrentUser, paths: list[str]) -> None:
        """Server-side configs read the server's own disk: administrators only, and only below
        BACKAPP_SERVER_SOURCE_ROOTS (disabled when unset)."""
        if not user.is_admin:
            raise Forbidden(
                "executionMode: only an administrator may create or change server-side "
                "configurations (they read the server's own files)",
                field="executionMode",
            )
        check_server_sources(paths, self.settings.server_source_roots, resolve=False)

    async def _row(self, user: CurrentUser, config_id: str) -> dict[str, Any]:
        return await users_row(BackupConfig, user, config_id, "config")

    async def create(self, user: CurrentUser, data: ConfigIn) -> ConfigOut:
        name = data.name.strip()
        if not name:
            raise InvalidInput("name: must not be blank", field="name")
        _check_sources(data.sources)
        options = _check_options(data.options)
        _check_kind(options, data.execution_mode)
        agent_id = await self._agent_for(user, data.execution_mode, data.agent_id)
        if data.execution_mode == "server":
            self._check_server_mode(user, [s.path for s in data.sources])
        now = utcnow()
        config = BackupConfig(
            id=uuid.uuid4(),
            user=user.id,
            name=name,
            execution_mode=data.execution_mode,
            agent=agent_id,
            sources=msgspec.to_builtins(data.sources),
            excludes=list(data.excludes),
            options=msgspec.to_builtins(options),
            created_at=now,
            updated_at=now,
        )
        await config.save()
        await refresh_severity("id = {}", config.id)  # blocked when its agent is deactivated
        return await self.get(user, str(config.id))

    async def get(self, user: CurrentUser, config_id: str) -> ConfigOut:
        return self._out(await self._row(user, config_id))

    async def list_configs(self, user: CurrentUser, agent_id: str | None = None) -> list[ConfigOut]:
        where: Combinable = BackupConfig.user == user.id
        if agent_id:
            where = where & (BackupConfig.agent == parse_uuid(agent_id, "agent"))
        rows = (
            await BackupConfig.select(*OUT_COLUMNS)
            .where(where)
            .order_by(BackupConfig.created_at, BackupConfig.id)
        )
        return self._outs(rows)

    async def page_configs(
        self,
        user: CurrentUser,
        *,
        agent_id: str | None = None,
        search: str | None = None,
        after: Cursor | None = None,
        limit: int = 50,
    ) -> tuple[list[ConfigOut], Cursor | None]:
        """One page of this user's configs, oldest first (the order of :meth:`list_configs`),
        after ``after``; and the cursor of the next page, None on the last one.

        ``search`` matches a part of the name, ignoring case."""
        where: Combinable = BackupConfig.user == user.id
        if agent_id:
            where = where & (BackupConfig.agent == filter_uuid(agent_id, "agentId"))
        if search:
            where = where & name_contains("name", search)
        rows, next_cursor = await keyset_page(
            BackupConfig,
            where,
            BackupConfig.created_at,
            after,
            limit,
            newest_first=False,
            columns=OUT_COLUMNS,
        )
        return self._outs(rows), next_cursor

    async def by_ids(self, user: CurrentUser, config_ids: list[str]) -> list[ConfigOut]:
        """These configs of this user, oldest first (unknown or foreign ids are left out)."""
        ids = [as_uuid(c) for c in config_ids]
        if not ids:
            return []
        rows = (
            await BackupConfig.select(*OUT_COLUMNS)
            .where((BackupConfig.user == user.id) & BackupConfig.id.is_in(ids))
            .order_by(BackupConfig.created_at, BackupConfig.id)
        )
        return self._outs(rows)

    async def update(self, user: CurrentUser, config_id: str, patch: ConfigPatch) -> ConfigOut:
        row = await self._row(user, config_id)
        current = self._out(row)
        values: dict[Any, Any] = {}
        if patch.name is not msgspec.UNSET:
            name = patch.name.strip()
            if not name:
                raise InvalidInput("name: must not be blank", field="name")
            values[BackupConfig.name] = name
        if patch.sources is not msgspec.UNSET:
            _check_sources(patch.sources)
            values[BackupConfig.sources] = msgspec.to_builtins(patch.sources)
        if patch.excludes is not msgspec.UNSET:
            values[BackupConfig.excludes] = list(patch.excludes)
        if patch.options is not msgspec.UNSET:
            merged = msgspec.to_builtins(current.options)
            merged.update(msgspec.to_builtins(patch.options))
            try:
                options = msgspec.convert(merged, Options)
            except msgspec.ValidationError as exc:
                raise InvalidInput(f"options: {exc}", field="options") from None
            options = _check_options(options)
            values[BackupConfig.options] = msgspec.to_builtins(options)
        mode = current.execution_mode
        agent_id = current.agent_id
        if patch.execution_mode is not msgspec.UNSET:
            mode = patch.execution_mode
            if mode == "server" and patch.agent_id is msgspec.UNSET:
                agent_id = None
        if patch.agent_id is not msgspec.UNSET:
            agent_id = patch.agent_id
        if mode != current.execution_mode or agent_id != current.agent_id:
            values[BackupConfig.execution_mode] = mode
            values[BackupConfig.agent] = await self._agent_for(user, mode, agent_id)
        _check_kind(options if patch.options is not msgspec.UNSET else current.options, mode)
        if values and "server" in (mode, current.execution_mode):
            if not user.is_admin:
                raise Forbidden(
                    "executionMode: only an administrator may change a server-side configuration",
                    field="executionMode",
                )
            if mode == "server":
                sources = current.sources if patch.sources is msgspec.UNSET else patch.sources
                self._check_server_mode(user, [s.path for s in sources])
        if values:
            values[BackupConfig.updated_at] = utcnow()
            # Its schedule, retention or agent may have changed: the rounds look at it again.
            values[BackupConfig.alert_due_at] = None
            values[BackupConfig.retention_due_at] = None
            values[BackupConfig.revision] = BackupConfig.revision + 1
            await BackupConfig.update(values).where(BackupConfig.id == row["id"])
            if BackupConfig.agent in values:
                await refresh_severity("id = {}", row["id"])
        return await self.get(user, str(row["id"]))

    async def delete(self, user: CurrentUser, config_id: str) -> None:
        row = await self._row(user, config_id)
        await BackupConfig.delete().where(BackupConfig.id == row["id"])

    async def for_agent(self, agent_id: uuid.UUID, user_id: uuid.UUID) -> list[AgentConfig]:
        rows = (
            await BackupConfig.select()
            .where(
                (BackupConfig.agent == agent_id)
                & (BackupConfig.user == user_id)
                & (BackupConfig.execution_mode == "agent")
            )
            .order_by(BackupConfig.created_at)
        )
        result = []
        for row in rows:
            out = self._out(row)
            result.append(
                AgentConfig(
                    id=out.id,
                    name=out.name,
                    sources=out.sources,
                    destination=out.destination,
                    options=out.options,
                    excludes=out.excludes,
                )
            )
        return result
