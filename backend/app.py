"""The one place where the server is wired: routes, dependencies, error mapping, lifecycle."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.config.response_cache import ResponseCacheConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from backend import __version__
from backend.api.agent import AgentApiController
from backend.api.agent_checks import AgentCheckController
from backend.api.agent_compaction import AgentCompactionController
from backend.api.agent_continue import AgentContinueController
from backend.api.agent_recovery import AgentRecoveryController
from backend.api.agent_snapshots import AgentSnapshotController
from backend.api.agent_updates import AgentUpdateController
from backend.api.auth import AuthController
from backend.api.deps import ServicesDep, provide_services
from backend.api.guards import ApiRequest
from backend.api.inherit import InheritanceController
from backend.api.openapi import document_errors
from backend.api.organisation import OrganisationRecoveryController
from backend.api.owner import (
    AgentController,
    AlertController,
    BackupController,
    ConfigController,
)
from backend.api.pairing import AgentPairController, PairingCodeController
from backend.api.restore_jobs import AgentRestoreJobController, RestoreJobController
from backend.db import bind_tables, make_engine
from backend.errors import DomainError, RateLimited
from backend.schemas import ErrorResponse
from backend.services import Services
from backend.settings import Settings, get_settings
from backend.storage import LocalStorage
from backend.web import template_config as web_template_config
from backend.web import web_handlers
from desktop_agent.engine import install_log_redaction

__all__ = ["create_app", "create_served_app", "freeze_startup_objects"]

log = logging.getLogger("backapp")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _error(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorResponse]:
    return Response(
        ErrorResponse(
            status=status, error=code or _CODES.get(status, "error"), detail=detail, field=field
        ),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    response = _error(exc.status_code, exc.detail, field=exc.field, code=exc.code, headers=headers)
    if exc.extra:
        body = {**msgspec.to_builtins(response.content), **exc.extra}
        return Response(
            body, status_code=exc.status_code, media_type=MediaType.JSON, headers=headers
        )
    return response


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    detail = str(exc.detail)
    if isinstance(exc, ValidationException) and exc.extra:
        items = exc.extra if isinstance(exc.extra, list) else [exc.extra]
        parts = []
        for item in items:
            if isinstance(item, dict):
                key = item.get("key")
                message = item.get("message", "")
                parts.append(f"{key}: {message}" if key else str(message))
            else:
                parts.append(str(item))
        detail = "invalid request: " + "; ".join(parts)
    headers = dict(exc.headers) if exc.headers else None
    return _error(exc.status_code, detail, headers=headers)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error", code="internal_error")


@get("/api/health", tags=["server"], summary="Liveness: answers without touching the database")
async def health(services: ServicesDep) -> dict[str, Any]:
    return {"success": True, "version": __version__, "storage": services.storage.kind}


class Runtime:
    """What a server process starts and stops around serving requests."""

    def __init__(self, engine: Engine, services: Services) -> None:  # type: ignore[type-arg]
        self.engine = engine
        self.services = services

    async def start(self) -> None:
        bind_tables(self.engine)
        if isinstance(self.engine, PostgresEngine):
            await self.engine.start_connection_pool(max_size=20)
            await self.services.registry.listen_postgres(self.engine.config["dsn"])
        await self.services.live.start()
        self.services.registry.start(self.services.live)
        self.services.tasks.start()

    async def stop(self) -> None:
        await self.services.tasks.stop()
        await self.services.registry.stop()
        await self.services.live.stop()
        if isinstance(self.engine, PostgresEngine):
            await self.engine.close_connection_pool()


def create_app(settings: Settings | None = None, services: ServicesDep | None = None) -> Litestar:
    install_log_redaction()
    settings = settings or get_settings()
    services = services or Services.build(settings)
    engine = make_engine(settings.database_url)

    runtime = Runtime(engine, services)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    handlers: list[Any] = [
        AuthController,
        AgentApiController,
        AgentSnapshotController,
        AgentCheckController,
        AgentCompactionController,
        AgentRecoveryController,
        AgentContinueController,
        AgentPairController,
        PairingCodeController,
        RestoreJobController,
        AgentRestoreJobController,
        ConfigController,
        AgentController,
        AgentUpdateController,
        InheritanceController,
        OrganisationRecoveryController,
        BackupController,
        AlertController,
        health,
    ]
    if isinstance(services.storage, LocalStorage):
        from backend.storage.local_routes import local_storage_handlers

        handlers.extend(local_storage_handlers())
    handlers.extend(web_handlers())  # the web console's pages and /static

    app = Litestar(
        route_handlers=handlers,
        template_config=web_template_config(),
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        exception_handlers={
            DomainError: _domain_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="BackApp",
            version=__version__,
            description="Backup server: accounts, agents, backup configurations and history. "
            "The agent contract is documented in docs/agent-api.md.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        response_cache_config=ResponseCacheConfig(),
        request_class=ApiRequest,
        debug=False,
    )
    document_errors(app.routes)
    app.state.services = services
    app.state.storage = services.storage
    app.state.settings = settings
    app.state.runtime = runtime
    return app


def create_served_app(settings: Settings | None = None) -> Litestar:
    """The app as ``backapp serve`` runs it (its factory): :func:`create_app`, and once started,
    :func:`freeze_startup_objects`."""
    app = create_app(settings)
    app.on_startup.append(freeze_startup_objects)
    return app


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, the app, its routes and services: about 130,000
    objects) out of the cyclic garbage collector's way (:func:`gc.freeze`, after a collection).
    They live as long as the process, yet every full collection walked them all again: a
    500-row list page, whose rows set off such collections, took about a quarter more CPU."""
    gc.collect()
    gc.freeze()
