"""The owner's JSON API: configs, agents and backups, always scoped to the signed-in user."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
    HTTP_303_SEE_OTHER,
)

from backend.api.deps import AS_USER, AfterQuery, SearchQuery, ServicesDep, UserDep
from backend.api.guards import api_guard
from backend.errors import InvalidInput
from backend.run_schemas import RunRequestResponse
from backend.schemas import (
    AgentListResponse,
    AgentLogsResponse,
    AgentPatch,
    AgentResponse,
    AlertListResponse,
    BackupListResponse,
    BackupResponse,
    BackupStatus,
    ConfigIn,
    ConfigListResponse,
    ConfigPatch,
    ConfigResponse,
    DownloadResponse,
    PreviewBackup,
    RetentionPreviewRequest,
    RetentionPreviewResponse,
)
from backend.services.clock import iso
from backend.services.cursors import Cursor
from backend.services.history import BackupFilter

MAX_LIST = 500
"""The most configs or agents one list request answers with (``limit``'s bound)."""
DEFAULT_LIST = 100
"""How many configs or agents a list request without ``limit`` answers with: a page, whatever
the size of the fleet (``nextAfter`` continues)."""
MAX_OFFSET = 10_000_000
"""Paging deeper than this is not a use of the history; the bound keeps the database's 64-bit
integers from overflowing into a 500."""
OFFSET_WINDOW = 10_000
"""How far from the newest or the oldest backup an ``offset`` page may lie. An offset costs every
row it skips, so a page deeper than this from both ends is refused (400) and read with ``after``
instead, whose cost does not grow with depth."""


class ConfigController(Controller):
    path = "/api/configs"
    guards = [api_guard]
    tags = ["configs"]
    dependencies = AS_USER

    @get("/", summary="List backup configurations")
    async def list_configs(
        self,
        user: UserDep,
        services: ServicesDep,
        agent_id: Annotated[str | None, QueryParameter(name="agentId")] = None,
        q: SearchQuery = None,
        after: AfterQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST)] = DEFAULT_LIST,
    ) -> ConfigListResponse:
        """Oldest first, at most ``limit``; ``nextAfter`` continues (keyset pagination)."""
        position = services.cursors.position("configs", user.id, after)
        configs, more = await services.configs.page_configs(
            user, agent_id=agent_id, search=q, after=position, limit=limit
        )
        return ConfigListResponse(
            configs=configs, next_after=services.cursors.next_after("configs", user.id, more)
        )

    @post("/", status_code=HTTP_201_CREATED, summary="Create a backup configuration")
    async def create_config(
        self, data: JSONBody[ConfigIn], user: UserDep, services: ServicesDep
    ) -> ConfigResponse:
        return ConfigResponse(config=await services.configs.create(user, data))

    @get("/{config_id:str}", summary="One backup configuration")
    async def get_config(
        self, config_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> ConfigResponse:
        return ConfigResponse(config=await services.configs.get(user, config_id))

    @patch("/{config_id:str}", summary="Change a backup configuration")
    async def update_config(
        self,
        config_id: FromPath[str],
        data: JSONBody[ConfigPatch],
        user: UserDep,
        services: ServicesDep,
    ) -> ConfigResponse:
        return ConfigResponse(config=await services.configs.update(user, config_id, data))

    @post(
        "/{config_id:str}/retention-preview",
        status_code=HTTP_200_OK,
        summary="What-if: which existing backups a retention policy would remove (changes nothing)",
    )
    async def retention_preview(
        self,
        config_id: FromPath[str],
        data: JSONBody[RetentionPreviewRequest],
        user: UserDep,
        services: ServicesDep,
    ) -> RetentionPreviewResponse:
        config = await services.configs.get(user, config_id)
        current = msgspec.to_builtins(config.options)
        wanted = msgspec.to_builtins(data)
        options = {
            "retentionDays": wanted.get("retentionDays", current.get("retentionDays")),
            "retention": wanted.get("retention", current.get("retention")),
        }
        zone, rows, decision = await services.tasks.retention.preview(config.id, options)
        out = {}
        for row in rows:
            out[str(row["id"])] = PreviewBackup(
                id=str(row["id"]),
                type="incremental" if row["backup_type"] == "incremental" else "full",
                finished_at=iso(row["completed_at"] or row["started_at"]),
                size=row["size"],
                reasons=decision.keep.get(str(row["id"]), []),
            )
        return RetentionPreviewResponse(
            timezone=zone,
            remove=[out[i] for i in decision.remove],
            keep=sorted(
                (out[i] for i in decision.keep),
                key=lambda b: b.finished_at or "",
                reverse=True,
            ),
        )

    @post(
        "/{config_id:str}/run",
        status_code=HTTP_202_ACCEPTED,
        summary="Back Up Now: ask the config's agent (or the server) to run it at once",
    )
    async def run_config(
        self, config_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> RunRequestResponse:
        return RunRequestResponse(run_request=await services.runs.request(user, config_id))

    @delete("/{config_id:str}", status_code=HTTP_204_NO_CONTENT, summary="Delete a configuration")
    async def delete_config(
        self, config_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> None:
        await services.configs.delete(user, config_id)


class AgentController(Controller):
    path = "/api/agents"
    guards = [api_guard]
    tags = ["agents"]
    dependencies = AS_USER

    @get("/", summary="List agents with their status")
    async def list_agents(
        self,
        user: UserDep,
        services: ServicesDep,
        q: SearchQuery = None,
        after: AfterQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST)] = DEFAULT_LIST,
    ) -> AgentListResponse:
        """Oldest first, at most ``limit``; ``nextAfter`` continues (keyset pagination)."""
        position = services.cursors.position("agents", user.id, after)
        agents, more = await services.agents.page_agents(
            user, search=q, after=position, limit=limit
        )
        return AgentListResponse(
            agents=agents, next_after=services.cursors.next_after("agents", user.id, more)
        )

    @get("/{agent_id:str}", summary="One agent")
    async def get_agent(
        self, agent_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> AgentResponse:
        return AgentResponse(agent=await services.agents.get(user, agent_id))

    @patch(
        "/{agent_id:str}",
        summary="Rename, deactivate or reactivate an agent, or set its limits and parallel backups",
    )
    async def update_agent(
        self,
        agent_id: FromPath[str],
        data: JSONBody[AgentPatch],
        user: UserDep,
        services: ServicesDep,
    ) -> AgentResponse:
        agent = await services.agents.update(
            user,
            agent_id,
            name=None if data.name is msgspec.UNSET else data.name,
            active=None if data.active is msgspec.UNSET else data.active,
            limits=data.limits,
            parallel_backups=data.parallel_backups,
        )
        return AgentResponse(agent=agent)

    @post("/{agent_id:str}/deactivate", status_code=200, summary="Revoke an agent's key")
    async def deactivate_agent(
        self, agent_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> AgentResponse:
        return AgentResponse(
            agent=await services.agents.update(user, agent_id, name=None, active=False)
        )

    @post("/{agent_id:str}/activate", status_code=200, summary="Accept an agent's key again")
    async def activate_agent(
        self, agent_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> AgentResponse:
        return AgentResponse(
            agent=await services.agents.update(user, agent_id, name=None, active=True)
        )

    @delete("/{agent_id:str}", status_code=HTTP_204_NO_CONTENT, summary="Delete an agent")
    async def delete_agent(
        self, agent_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> None:
        await services.agents.delete(user, agent_id)

    @get("/{agent_id:str}/logs", summary="An agent's log lines, newest first")
    async def agent_logs(
        self,
        agent_id: FromPath[str],
        user: UserDep,
        services: ServicesDep,
        level: FromQuery[Literal["debug", "info", "warning", "error"] | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        before: FromQuery[datetime | None] = None,
    ) -> AgentLogsResponse:
        logs, next_before = await services.agents.logs(
            user, agent_id, level=level, limit=limit, before=before
        )
        return AgentLogsResponse(logs=logs, next_before=next_before)


class BackupController(Controller):
    path = "/api/backups"
    guards = [api_guard]
    tags = ["backups"]
    dependencies = AS_USER

    @get("/", summary="Backup history, newest first, with filters")
    async def list_backups(
        self,
        user: UserDep,
        services: ServicesDep,
        config_id: Annotated[str | None, QueryParameter(name="configId")] = None,
        agent_id: Annotated[str | None, QueryParameter(name="agentId")] = None,
        status: FromQuery[BackupStatus | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
        after: AfterQuery = None,
    ) -> BackupListResponse:
        """``offset`` pages count every match (``total``) and lie within ``OFFSET_WINDOW`` rows of
        either end; ``after`` (the ``nextAfter`` of the page before) pages at a cost that does not
        grow with depth, and leaves ``total`` null."""
        filters = BackupFilter(
            config_id=config_id, agent_id=agent_id, status=status, since=since, until=until
        )
        if after:
            if offset:
                raise InvalidInput("offset: give either offset or after, not both", field="offset")
            page, more = await services.history.page_backups(
                user,
                filters,
                after=services.cursors.decode("backups", user.id, after),
                limit=limit,
            )
            return BackupListResponse(
                backups=page,
                total=None,
                next_after=services.cursors.next_after("backups", user.id, more),
            )
        backups, total = await services.history.list_backups(
            user, filters, limit=limit, offset=offset, window=OFFSET_WINDOW
        )
        next_after = None
        if backups and offset + len(backups) < total:
            last = backups[-1]
            next_after = services.cursors.encode(
                "backups",
                user.id,
                Cursor(at=datetime.fromisoformat(last.started_at), id=uuid.UUID(last.id)),
            )
        return BackupListResponse(backups=backups, total=total, next_after=next_after)

    @get(
        "/{backup_id:str}/download",
        summary="A pre-signed GET URL (1 hour) for a completed backup; ?redirect=true answers 303",
    )
    async def download_backup(
        self,
        backup_id: FromPath[str],
        user: UserDep,
        services: ServicesDep,
        redirect: FromQuery[bool] = False,
    ) -> Response[DownloadResponse] | Redirect:
        download = await services.restores.download(user, backup_id)
        if redirect:
            return Redirect(download.url, status_code=HTTP_303_SEE_OTHER)
        return Response(DownloadResponse(download=download))

    @get("/{backup_id:str}", summary="One backup")
    async def get_backup(
        self, backup_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> BackupResponse:
        return BackupResponse(backup=await services.history.get(user, backup_id))


class AlertController(Controller):
    path = "/api/alerts"
    guards = [api_guard]
    tags = ["alerts"]
    dependencies = AS_USER

    @get("/", summary="The signed-in user's open alerts, newest first")
    async def list_alerts(self, user: UserDep, services: ServicesDep) -> AlertListResponse:
        return AlertListResponse(alerts=await services.alerts.open_alerts(user))
