"""Schedules, leases, Back Up Now and live progress through the real ASGI app, on SQLite and
PostgreSQL. The agent's WebSocket is driven with raw ASGI messages (the in-memory channels backend,
as on the embedded default)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar

from backend.agents.tables import Agent
from backend.app import create_app
from backend.backups.tables import BackupConfig, RunRequest
from backend.services import Services
from backend.services.clock import utcnow
from tests.support.api import ApiClient, local_path
from tests.support.asgi import AsgiSocket

FILENAME = "backup-2025-01-07-143022.tar.gz"


async def _setup(client: ApiClient, **config: Any) -> tuple[str, str, str]:
    await client.signup()
    agent_id, key = await client.register_agent("laptop", "linux")
    created = await client.create_config(agent_id, **config)
    return agent_id, key, created["id"]


async def _start(client: ApiClient, key: str, config_id: str, **extra: Any) -> dict[str, Any]:
    body = {"configId": config_id, "filename": FILENAME, "filesize": 11, **extra}
    r = await client.agent_post(key, "/api/agent/backup/start", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --- schedules and options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (
            {"preset": "daily", "at": "2:30"},
            {"preset": "daily", "at": "02:30", "cron": "30 2 * * *"},
        ),
        (
            {"preset": "hourly", "minute": 15},
            {"preset": "hourly", "minute": 15, "cron": "15 * * * *"},
        ),
        (
            {"preset": "weekly", "day": "Monday", "at": "23:05"},
            {"preset": "weekly", "day": "mon", "at": "23:05", "cron": "5 23 * * 1"},
        ),
        ({"cron": "*/5  * * * *"}, {"cron": "*/5 * * * *"}),
        (None, None),
    ],
)
async def test_schedules_are_normalised_and_reach_the_agent(
    client: ApiClient, given: Any, stored: Any
) -> None:
    _, key, config_id = await _setup(client, options={"schedule": given})
    expected = stored
    r = await client.get(f"/api/configs/{config_id}")
    assert r.json()["config"]["options"]["schedule"] == expected
    configs = (await client.agent_get(key, "/api/agent/configs")).json()["configs"]
    assert configs[0]["options"]["schedule"] == expected
    assert configs[0]["options"]["retry"] == {"attempts": 3, "delaySeconds": 60}
    assert configs[0]["options"]["alertGraceMinutes"] == 60


@pytest.mark.parametrize(
    ("options", "detail"),
    [
        ({"schedule": {"preset": "daily", "at": "25:00"}}, "schedule: 'at' must be a time of day"),
        ({"schedule": {"cron": "61 * * * *"}}, "is not a valid cron expression"),
        ({"schedule": {"preset": "monthly"}}, "'preset' must be one of hourly, daily, weekly"),
        ({"schedule": {"preset": "hourly", "every": 2}}, "unknown schedule field(s): every"),
        ({"retry": {"attempts": 11}}, "attempts"),
        ({"retry": {"attempts": 2, "delay": 5}}, "delay"),
        ({"alertGraceMinutes": 0}, "alertGraceMinutes"),
    ],
)
async def test_bad_options_are_refused_with_the_reason(
    client: ApiClient, options: dict[str, Any], detail: str
) -> None:
    await client.signup()
    agent_id, _ = await client.register_agent()
    body = {
        "name": "Daily",
        "executionMode": "agent",
        "agentId": agent_id,
        "sources": [{"path": "/x"}],
        "options": options,
    }
    r = await client.post("/api/configs", json=body)
    assert r.status_code == 400, r.text
    assert detail in r.json()["detail"]
    assert await BackupConfig.count() == 0


async def test_patching_the_schedule_keeps_the_other_options(client: ApiClient) -> None:
    _, _, config_id = await _setup(client, options={"retentionDays": 7})
    r = await client.patch(
        f"/api/configs/{config_id}", json={"options": {"schedule": {"preset": "daily"}}}
    )
    assert r.status_code == 200, r.text
    options = r.json()["config"]["options"]
    assert options["schedule"] == {"preset": "daily", "at": "00:00", "cron": "0 0 * * *"}
    assert options["retentionDays"] == 7
    r = await client.patch(
        f"/api/configs/{config_id}", json={"options": {"schedule": {"cron": "x"}}}
    )
    assert r.status_code == 400 and r.json()["field"] == "schedule"
    r = await client.patch(f"/api/configs/{config_id}", json={"options": {"schedule": None}})
    assert r.json()["config"]["options"]["schedule"] is None


async def test_a_stored_schedule_can_be_sent_back(client: ApiClient) -> None:
    """Read, change one option, send the options back: the normalised schedule is accepted."""
    _, _, config_id = await _setup(client, options={"schedule": {"preset": "daily", "at": "02:30"}})
    options = (await client.get(f"/api/configs/{config_id}")).json()["config"]["options"]
    r = await client.patch(f"/api/configs/{config_id}", json={"options": {"retentionDays": 9}})
    assert r.status_code == 200, r.text
    assert r.json()["config"]["options"]["schedule"] == options["schedule"]
    r = await client.patch(
        f"/api/configs/{config_id}", json={"options": {**options, "retentionDays": 8}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["config"]["options"]["schedule"] == options["schedule"]
    mismatch = {**options["schedule"], "cron": "0 3 * * *"}
    r = await client.patch(f"/api/configs/{config_id}", json={"options": {"schedule": mismatch}})
    assert r.status_code == 400 and "not both" in r.json()["detail"]


# --- heartbeat: time zone and pending requests --------------------------------------------------


async def test_heartbeat_stores_the_time_zone_and_refuses_an_unknown_one(client: ApiClient) -> None:
    agent_id, key, _ = await _setup(client)
    r = await client.agent_post(key, "/api/agent/heartbeat", {"timezone": "Europe/Paris"})
    assert r.status_code == 200, r.text
    assert r.json()["runRequests"] == []
    row = await Agent.select(Agent.timezone).where(Agent.id == uuid.UUID(agent_id)).first()
    assert row is not None and row["timezone"] == "Europe/Paris"
    bad = await client.agent_post(key, "/api/agent/heartbeat", {"timezone": "Mars/Olympus"})
    assert bad.status_code == 400
    assert "not an IANA time zone" in bad.json()["detail"]


# --- Back Up Now ---------------------------------------------------------------------------------


async def test_back_up_now_reaches_the_heartbeat_and_becomes_started(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    r = await client.post(f"/api/configs/{config_id}/run")
    assert r.status_code == 202, r.text
    run = r.json()["runRequest"]
    assert run["status"] == "pending" and run["configId"] == config_id
    again = await client.post(f"/api/configs/{config_id}/run")
    assert again.status_code == 409
    assert "already pending" in again.json()["detail"]

    hb = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert [x["id"] for x in hb.json()["runRequests"]] == [run["id"]]
    assert hb.json()["runRequests"][0]["configId"] == config_id

    started = await _start(client, key, config_id, runRequestId=run["id"])
    backup = (await client.get(f"/api/backups/{started['logId']}")).json()["backup"]
    assert backup["trigger"] == "request"
    assert (backup["attempt"], backup["maxAttempts"]) == (1, 1)
    row = await RunRequest.select().where(RunRequest.id == uuid.UUID(run["id"])).first()
    assert row is not None
    assert row["status"] == "started" and row["backup_id"] == started["logId"]
    hb = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert hb.json()["runRequests"] == []
    assert (await client.post(f"/api/configs/{config_id}/run")).status_code == 202


async def test_back_up_now_needs_an_active_agent_and_an_own_config(client: ApiClient) -> None:
    agent_id, _, config_id = await _setup(client)
    r = await client.post(f"/api/agents/{agent_id}/deactivate")
    assert r.status_code == 200
    r = await client.post(f"/api/configs/{config_id}/run")
    assert r.status_code == 400 and "deactivated" in r.json()["detail"]
    assert (await client.post(f"/api/configs/{uuid.uuid4()}/run")).status_code == 404
    assert (await client.post("/api/configs/not-an-id/run")).status_code == 404
    # no CSRF header: refused before anything is stored
    r = await client.raw.post(f"/api/configs/{config_id}/run")
    assert r.status_code == 403
    assert await RunRequest.count() == 0


async def test_stale_requests_expire_and_do_not_block_a_new_one(client: ApiClient) -> None:
    agent_id, key, config_id = await _setup(client)
    user = (await client.get("/api/auth/me")).json()["user"]
    old = uuid.uuid4()
    await RunRequest(
        id=old,
        user=uuid.UUID(user["id"]),
        config=uuid.UUID(config_id),
        agent=uuid.UUID(agent_id),
        status="pending",
        requested_at=utcnow() - timedelta(hours=2),
    ).save()
    hb = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert hb.json()["runRequests"] == []
    r = await client.post(f"/api/configs/{config_id}/run")
    assert r.status_code == 202
    row = await RunRequest.select(RunRequest.status).where(RunRequest.id == old).first()
    assert row is not None and row["status"] == "expired"


async def test_start_checks_the_run_request_and_the_attempts(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    body = {"configId": config_id, "filename": FILENAME, "filesize": 11}
    r = await client.agent_post(
        key, "/api/agent/backup/start", {**body, "runRequestId": str(uuid.uuid4())}
    )
    assert r.status_code == 404 and "runRequestId" in r.json()["detail"]
    r = await client.agent_post(
        key, "/api/agent/backup/start", {**body, "attempt": 3, "maxAttempts": 2}
    )
    assert r.status_code == 400 and "maxAttempts" in r.json()["detail"]
    r = await client.agent_post(key, "/api/agent/backup/start", {**body, "trigger": "cosmic"})
    assert r.status_code == 400
    started = await _start(client, key, config_id, trigger="retry", attempt=2, maxAttempts=3)
    backup = (await client.get(f"/api/backups/{started['logId']}")).json()["backup"]
    assert (backup["trigger"], backup["attempt"], backup["maxAttempts"]) == ("retry", 2, 3)


# --- leases -------------------------------------------------------------------------------------


async def test_leases_one_runner_at_a_time(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    r = await client.agent_post(key, "/api/agent/lease", {"configId": config_id, "ttlSeconds": 60})
    assert r.status_code == 200, r.text
    token = r.json()["lease"]["token"]
    assert r.json()["lease"]["expiresAt"].endswith("Z")
    taken = await client.agent_post(key, "/api/agent/lease", {"configId": config_id})
    assert taken.status_code == 409
    assert taken.json()["detail"].startswith("config is already running on agent laptop until ")
    renewed = await client.agent_post(
        key, "/api/agent/lease/renew", {"configId": config_id, "token": token, "ttlSeconds": 120}
    )
    assert renewed.status_code == 200 and renewed.json()["lease"]["token"] == token
    lost = await client.agent_post(
        key, "/api/agent/lease/renew", {"configId": config_id, "token": "nope"}
    )
    assert lost.status_code == 409 and "lost" in lost.json()["detail"]
    for _ in range(2):  # idempotent
        released = await client.agent_post(
            key, "/api/agent/lease/release", {"configId": config_id, "token": token}
        )
        assert released.status_code == 200 and released.json() == {"success": True}
    again = await client.agent_post(key, "/api/agent/lease", {"configId": config_id})
    assert again.status_code == 200 and again.json()["lease"]["token"] != token


async def test_lease_input_is_checked(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    short = await client.agent_post(
        key, "/api/agent/lease", {"configId": config_id, "ttlSeconds": 5}
    )
    assert short.status_code == 400 and "ttlSeconds" in short.json()["detail"]
    other = await client.agent_post(key, "/api/agent/lease", {"configId": str(uuid.uuid4())})
    assert other.status_code == 404
    # another agent of the same user may not take this config's lease
    _, key2 = await client.register_agent("desktop")
    r = await client.agent_post(key2, "/api/agent/lease", {"configId": config_id})
    assert r.status_code == 404
    assert (
        await client.raw.post("/api/agent/lease", json={"configId": config_id})
    ).status_code == 401


# --- progress -----------------------------------------------------------------------------------

PROGRESS = {
    "phase": "uploading",
    "filesDone": 120,
    "filesTotal": 300,
    "bytesDone": 5_000_000,
    "bytesTotal": 12_000_000,
    "rate": 1_250_000.5,
    "eta": 5.6,
}


async def test_progress_is_kept_while_running_and_dropped_after(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    started = await _start(client, key, config_id)
    log_id = started["logId"]
    r = await client.agent_post(key, "/api/agent/backup/progress", {"logId": log_id, **PROGRESS})
    assert r.status_code == 200, r.text
    backup = (await client.get(f"/api/backups/{log_id}")).json()["backup"]
    assert {k: backup["progress"][k] for k in PROGRESS} == PROGRESS
    bad = await client.agent_post(
        key, "/api/agent/backup/progress", {"logId": log_id, **PROGRESS, "phase": "dreaming"}
    )
    assert bad.status_code == 400
    negative = await client.agent_post(
        key, "/api/agent/backup/progress", {"logId": log_id, **PROGRESS, "filesDone": -1}
    )
    assert negative.status_code == 400
    unknown = await client.agent_post(
        key, "/api/agent/backup/progress", {"logId": str(uuid.uuid4()), **PROGRESS}
    )
    assert unknown.status_code == 404

    put = await client.raw.put(local_path(started["upload"]["url"]), content=b"hello world")
    assert put.status_code == 200
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": log_id, "status": "completed", "bytesTransferred": 11, "filesProcessed": 1},
    )
    assert done.status_code == 200, done.text
    backup = (await client.get(f"/api/backups/{log_id}")).json()["backup"]
    assert backup["progress"] is None
    late = await client.agent_post(key, "/api/agent/backup/progress", {"logId": log_id, **PROGRESS})
    assert late.status_code == 409


# --- the agent's WebSocket ----------------------------------------------------------------------


async def test_websocket_says_hello_sends_pending_and_new_requests(
    app_client: tuple[Litestar, ApiClient],
) -> None:
    app, client = app_client
    agent_id, key, config_id = await _setup(client)
    first = (await client.post(f"/api/configs/{config_id}/run")).json()["runRequest"]
    async with AsgiSocket(app, {"X-Agent-API-Key": key}) as ws:
        hello = await ws.receive()
        assert hello == {"type": "hello", "agent": {"id": agent_id, "name": "laptop"}}
        pending = await ws.receive()
        assert pending == {"type": "run", "runRequestId": first["id"], "configId": config_id}

        await _start(client, key, config_id, runRequestId=first["id"])
        second = (await client.post(f"/api/configs/{config_id}/run")).json()["runRequest"]
        live = await ws.receive()
        assert live == {"type": "run", "runRequestId": second["id"], "configId": config_id}

        await ws.send({"type": "ping"})
        assert await ws.receive() == {"type": "pong"}
        await ws.send({"type": "launch"})
        error = await ws.receive()
        assert error["type"] == "error" and error["status"] == 400
        await ws.send({"type": "progress", "logId": str(uuid.uuid4()), "phase": "scanning"})
        error = await ws.receive()
        assert error["status"] == 404


async def test_a_request_made_while_the_socket_opens_is_sent_once(
    app_client: tuple[Litestar, ApiClient], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner clicks Back Up Now after the socket subscribed to its channel but before it read
    the pending requests: the request is in both, and the agent hears of it once."""
    app, client = app_client
    _, key, config_id = await _setup(client)
    read_backlog = services.runs.pending_for_agent
    made: list[dict[str, Any]] = []

    async def click_in_between(agent: Any) -> Any:
        r = await client.post(f"/api/configs/{config_id}/run")
        made.append(r.json()["runRequest"])
        return await read_backlog(agent)

    monkeypatch.setattr(services.runs, "pending_for_agent", click_in_between)
    async with AsgiSocket(app, {"X-Agent-API-Key": key}) as ws:
        assert (await ws.receive())["type"] == "hello"
        heard: list[dict[str, Any]] = []
        while True:
            try:
                heard.append(await ws.receive(wait=1.0))
            except TimeoutError:
                break
    assert heard == [{"type": "run", "runRequestId": made[0]["id"], "configId": config_id}]


async def test_websocket_progress_is_stored(app_client: tuple[Litestar, ApiClient]) -> None:
    app, client = app_client
    _, key, config_id = await _setup(client)
    started = await _start(client, key, config_id)
    async with AsgiSocket(app, {"X-Agent-API-Key": key}) as ws:
        assert (await ws.receive())["type"] == "hello"
        await ws.send({"type": "progress", "logId": started["logId"], **PROGRESS})
        await ws.send({"type": "ping"})  # answered after the progress was handled
        assert await ws.receive() == {"type": "pong"}
    backup = (await client.get(f"/api/backups/{started['logId']}")).json()["backup"]
    assert backup["progress"]["filesDone"] == 120


async def test_websocket_refuses_a_bad_key(app_client: tuple[Litestar, ApiClient]) -> None:
    app, _ = app_client
    async with AsgiSocket(app, {"X-Agent-API-Key": "bka_not-a-key"}) as ws:
        error = await ws.receive()
        assert error["status"] == 401 and error["type"] == "error"
        closed = await ws.next_raw()
        assert closed["type"] == "websocket.close" and closed["code"] == 4401
    async with AsgiSocket(app, {}) as ws:
        assert (await ws.receive())["detail"] == "missing X-Agent-API-Key header"


async def test_pages_events_need_a_session(client: ApiClient) -> None:
    r = await client.raw.get("/events")
    assert r.status_code == 401


# --- the pages (as a browser without scripts uses them) -----------------------------------------


async def test_back_up_now_button_and_schedule_form(client: ApiClient) -> None:
    from tests.support.web import Browser

    browser = Browser(client)
    _, key, config_id = await _setup(client)
    page = await browser.get(f"/configs/{config_id}")
    assert f'action="/configs/{config_id}/run"' in page.text
    assert "Manual only" in page.text and "data-live-feed" in page.text

    r = await browser.submit(f"/configs/{config_id}", f"/configs/{config_id}/run", {})
    assert r.status_code == 303 and r.headers["location"] == f"/configs/{config_id}"
    shown = await browser.get(r.headers["location"])
    assert "Back Up Now: “Daily” was sent to its agent." in shown.text
    assert "Back Up Now requested" in shown.text and "waiting for the agent" in shown.text
    hb = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert len(hb.json()["runRequests"]) == 1
    dashboard = await browser.get("/")
    assert f'action="/configs/{config_id}/run"' in dashboard.text  # the button is there too
    # a second click while the first is pending: said so, nothing new
    r = await browser.submit("/", f"/configs/{config_id}/run", {"next": "/"})
    assert r.headers["location"] == "/"
    shown = await browser.get("/")
    assert "was not started: a Back Up Now request for this configuration is already pending" in (
        shown.text
    )
    assert await RunRequest.count() == 1
    # without the form's token: refused
    r = await client.raw.post(f"/configs/{config_id}/run", data={"_csrf": "forged"})
    assert r.status_code == 403
    assert await RunRequest.count() == 1

    fields = {
        "name": "Daily",
        "execution_mode": "agent",
        "agent_id": (await client.get(f"/api/configs/{config_id}")).json()["config"]["agentId"],
        "sources": "/home/me/docs",
        "type": "full",
        "compression": "on",
        "compression_format": "gzip",
        "retention_days": "30",
        "schedule_kind": "cron",
        "schedule_cron": "every day",
        "retry_attempts": "0",
    }
    edit = f"/configs/{config_id}/edit"
    r = await browser.submit(edit, edit, fields)
    assert r.status_code == 400
    assert 'id="schedule-error">' in r.text and "is not a valid cron expression" in r.text
    assert 'id="retry_attempts-error">A whole number of tries from 1 to 10.' in r.text
    assert 'value="every day"' in r.text  # what was typed is kept
    fields.update(schedule_kind="hourly", schedule_minute="45", retry_attempts="5")
    r = await browser.submit(edit, edit, fields)
    assert r.status_code == 303, r.text
    options = (await client.get(f"/api/configs/{config_id}")).json()["config"]["options"]
    assert options["schedule"] == {"preset": "hourly", "minute": 45, "cron": "45 * * * *"}
    assert options["retry"] == {"attempts": 5, "delaySeconds": 60}
    form = await browser.get(edit)
    assert '<option value="hourly" selected>' in form.text and 'value="45"' in form.text
    listing = await browser.get("/configs")
    assert "Hourly at :45" in listing.text


async def test_pages_render_progress_of_a_running_backup(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    started = await _start(client, key, config_id)
    r = await client.agent_post(
        key, "/api/agent/backup/progress", {"logId": started["logId"], **PROGRESS}
    )
    assert r.status_code == 200
    text = "Uploading · 120 / 300 files · 4.8 MiB / 11.4 MiB · 1.2 MiB/s · about 5.0 s left"
    for path in ("/backups", f"/configs/{config_id}", "/", f"/backups/{started['logId']}"):
        page = await client.get(path)
        assert f'data-progress-for="{started["logId"]}"' in page.text, path
        assert text in page.text, path
        assert '<progress max="100" value="41">' in page.text, path


async def test_websocket_closes_when_the_key_is_revoked(
    app_client: tuple[Litestar, ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.api import agent_ws

    app, client = app_client
    agent_id, key, _ = await _setup(client)
    # a message after the revocation is refused and ends the socket
    async with AsgiSocket(app, {"X-Agent-API-Key": key}) as ws:
        assert (await ws.receive())["type"] == "hello"
        assert (await client.post(f"/api/agents/{agent_id}/deactivate")).status_code == 200
        await ws.send({"type": "ping"})
        assert (await ws.receive())["status"] == 401
        closed = await ws.next_raw()
        assert closed["type"] == "websocket.close" and closed["code"] == 4401
    # an idle socket is closed by the periodic re-check
    assert (await client.post(f"/api/agents/{agent_id}/activate")).status_code == 200
    monkeypatch.setattr(agent_ws, "REVALIDATE_SECONDS", 0.2)
    async with AsgiSocket(app, {"X-Agent-API-Key": key}) as ws:
        assert (await ws.receive())["type"] == "hello"
        assert (await client.post(f"/api/agents/{agent_id}/deactivate")).status_code == 200
        assert (await ws.receive(wait=5))["status"] == 401
        closed = await ws.next_raw()
        assert closed["type"] == "websocket.close" and closed["code"] == 4401


async def test_back_up_now_of_a_server_side_config(tmp_path: Any, db_url: str) -> None:
    """No agent: the request is stored for the server's own runner and published to it."""
    from backend.services.pubsub import SERVER_CHANNEL
    from backend.storage import LocalStorage
    from tests.support.settings import make_settings

    settings = make_settings(
        tmp_path, db_url, server_source_roots=(str(tmp_path),), task_interval=3600.0
    )
    storage = LocalStorage(
        root=settings.data_dir / "storage", base_url=settings.base_url, secret=settings.secret_key
    )
    services = Services.build(settings, storage)
    app = create_app(settings, services)
    await app.state.runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://testserver.local",
        ) as raw:
            client = ApiClient(raw)
            await client.signup()
            config = await client.create_config(None, sources=[{"path": str(tmp_path)}])
            async with services.live.subscription(SERVER_CHANNEL) as subscriber:
                r = await client.post(f"/api/configs/{config['id']}/run")
                assert r.status_code == 202, r.text
                run = r.json()["runRequest"]
                event = await asyncio.wait_for(subscriber.iter_events().__anext__(), 5)
            assert json.loads(event) == {
                "type": "run",
                "runRequestId": run["id"],
                "configId": config["id"],
            }
            row = await RunRequest.select().where(RunRequest.id == uuid.UUID(run["id"])).first()
            assert row is not None and row["agent"] is None
    finally:
        await app.state.runtime.stop()


async def test_a_request_made_by_another_process_reaches_the_heartbeat(client: ApiClient) -> None:
    """Heartbeats consult a per-process set of agents with pending requests, re-read in the
    background about once a second; a row written by another server process (here: straight
    into the table) must still reach this process's heartbeats, and a started one must leave."""
    agent_id, key, config_id = await _setup(client)
    hb = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert hb.json()["runRequests"] == []
    rid = uuid.uuid4()
    user_id = (await Agent.select(Agent.user).where(Agent.id == uuid.UUID(agent_id)).first())[
        "user"
    ]
    await RunRequest(
        id=rid,
        user=user_id,
        config=uuid.UUID(config_id),
        agent=uuid.UUID(agent_id),
        status="pending",
        requested_at=utcnow(),
    ).save()
    found: list[str] = []
    for _ in range(50):
        hb = await client.agent_post(key, "/api/agent/heartbeat", {})
        found = [x["id"] for x in hb.json()["runRequests"]]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == [str(rid)]
    await RunRequest.update({RunRequest.status: "started"}).where(RunRequest.id == rid)
    hb = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert hb.json()["runRequests"] == []
