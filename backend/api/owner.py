"""The owner's JSON API: configs, agents and backups, always scoped to the signed-in user."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import (
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
    HTTP_303_SEE_OTHER,
)

from backend.api.deps import ServicesDep, UserDep, provide_user
from backend.api.guards import api_guard
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
    RunRequestResponse,
)

_USER = {"user": Provide(provide_user)}
MAX_OFFSET = 10_000_000
"""Paging deeper than this is not a use of the history; the bound keeps the database's 64-bit
integers from overflowing into a 500."""


class ConfigController(Controller):
    path = "/api/configs"
    guards = [api_guard]
    tags = ["configs"]
    dependencies = _USER

    @get("/", summary="List backup configurations")
    async def list_configs(
        self,
        user: UserDep,
        services: ServicesDep,
        agent_id: Annotated[str | None, QueryParameter(name="agentId")] = None,
    ) -> ConfigListResponse:
        return ConfigListResponse(configs=await services.configs.list_configs(user, agent_id))

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
    dependencies = _USER

    @get("/", summary="List agents with their status")
    async def list_agents(self, user: UserDep, services: ServicesDep) -> AgentListResponse:
        return AgentListResponse(agents=await services.agents.list_agents(user))

    @get("/{agent_id:str}", summary="One agent")
    async def get_agent(
        self, agent_id: FromPath[str], user: UserDep, services: ServicesDep
    ) -> AgentResponse:
        return AgentResponse(agent=await services.agents.get(user, agent_id))

    @patch("/{agent_id:str}", summary="Rename, deactivate or reactivate an agent")
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
    dependencies = _USER

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
    ) -> BackupListResponse:
        backups, total = await services.history.list_backups(
            user,
            config_id=config_id,
            agent_id=agent_id,
            status=status,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        return BackupListResponse(backups=backups, total=total)

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
    dependencies = _USER

    @get("/", summary="The signed-in user's open alerts, newest first")
    async def list_alerts(self, user: UserDep, services: ServicesDep) -> AlertListResponse:
        return AlertListResponse(alerts=await services.alerts.open_alerts(user))
