"""Alerts: evaluation with a controllable clock (SQLite and PostgreSQL), delivery to a real SMTP
server and a real webhook receiver on loopback, the owner's JSON and the dashboard section."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.agents.tables import Agent
from backend.app import create_app
from backend.backups.tables import Alert, BackupConfig, BackupLog
from backend.services import Services
from backend.services.clock import utcnow
from backend.services.last_backup import refresh_last_backups
from backend.storage import LocalStorage
from tests.support.api import ApiClient
from tests.support.settings import make_settings
from tests.support.smtp import SmtpSink, WebhookSink, smtp_sink, webhook_sink

__all__ = ["smtp_sink", "webhook_sink"]  # fixtures used by the tests below


async def _app(
    tmp_path: Path, db_url: str, **overrides: Any
) -> AsyncIterator[tuple[ApiClient, Services]]:
    settings = make_settings(tmp_path, db_url, **overrides)
    storage = LocalStorage(
        root=settings.data_dir / "storage", base_url=settings.base_url, secret=settings.secret_key
    )
    services = Services.build(settings, storage)
    app = create_app(settings, services)
    await app.state.runtime.start()
    await services.tasks.started()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as raw:
            yield ApiClient(raw), services
    finally:
        await app.state.runtime.stop()


@pytest.fixture
async def app(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[ApiClient, Services]]:
    async for pair in _app(tmp_path, db_url):
        yield pair


async def open_alerts(kind: str | None = None) -> list[dict[str, Any]]:
    rows = await Alert.select().where(Alert.resolved_at.is_null())
    return [r for r in rows if kind is None or r["kind"] == kind]


async def add_backup(
    client: ApiClient,
    key: str,
    config_id: str,
    *,
    status: str = "completed",
    at: datetime,
    attempt: int = 1,
    max_attempts: int = 1,
) -> str:
    name = f"b-{uuid.uuid4().hex[:8]}.tar.gz"
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": name, "filesize": 3},
    )
    assert start.status_code == 200, start.text
    log_id = start.json()["logId"]
    if status == "completed":
        put = await client.raw.put(
            start.json()["upload"]["url"].replace("http://testserver.local", ""), content=b"abc"
        )
        assert put.status_code == 200
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": log_id, "status": status, "size": 3, "error": "disk on fire"},
    )
    assert done.status_code == 200, done.text
    await BackupLog.update(
        {
            BackupLog.started_at: at - timedelta(minutes=1),
            BackupLog.completed_at: at,
            BackupLog.attempt: attempt,
            BackupLog.max_attempts: max_attempts,
        }
    ).where(BackupLog.id == uuid.UUID(log_id))
    # The history was rewritten behind the services' back: refresh what they keep of it.
    await refresh_last_backups(
        r["config"]
        for r in await BackupLog.select(BackupLog.config).where(BackupLog.id == uuid.UUID(log_id))
    )
    return str(log_id)


async def test_missed_backup_opens_and_resolves(app: tuple[ApiClient, Services]) -> None:
    client, services = app
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(
        agent_id, options={"schedule": {"preset": "daily", "at": "02:00"}}
    )
    other = await client.create_config(agent_id, name="manual only")  # no schedule: no alert
    now = utcnow()
    await BackupConfig.update({BackupConfig.created_at: now - timedelta(days=10)}).where(
        BackupConfig.id.is_in([uuid.UUID(config["id"]), uuid.UUID(other["id"])])
    )

    # 25 hours since the last success: within the daily interval plus the default 60 min grace.
    await add_backup(client, key, config["id"], at=now - timedelta(hours=24, minutes=50))
    await services.alerts.evaluate(now)
    assert await open_alerts("missed_backup") == []

    # 26 hours later: missed.
    report = await services.alerts.evaluate(now + timedelta(minutes=20))
    missed = await open_alerts("missed_backup")
    assert [a["subject"] for a in missed] == [f"config:{config['id']}"]
    assert "Daily" in missed[0]["message"] and "Daily at 02:00" in missed[0]["message"]
    assert str(missed[0]["id"]) in report.opened

    # Evaluating again keeps one open alert, not two.
    await services.alerts.evaluate(now + timedelta(minutes=30))
    assert len(await open_alerts("missed_backup")) == 1

    # A fresh backup clears it.
    await add_backup(client, key, config["id"], at=now + timedelta(minutes=35))
    report = await services.alerts.evaluate(now + timedelta(minutes=40))
    assert await open_alerts("missed_backup") == []
    assert str(missed[0]["id"]) in report.resolved


async def test_grace_comes_from_the_config(app: tuple[ApiClient, Services]) -> None:
    client, services = app
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(
        agent_id,
        options={"schedule": {"preset": "hourly", "minute": 0}, "alertGraceMinutes": 5},
    )
    now = utcnow()
    await add_backup(client, key, config["id"], at=now)
    await services.alerts.evaluate(now + timedelta(minutes=64))
    assert await open_alerts("missed_backup") == []
    await services.alerts.evaluate(now + timedelta(minutes=66))
    assert len(await open_alerts("missed_backup")) == 1


async def test_agent_offline(app: tuple[ApiClient, Services]) -> None:
    client, services = app
    await client.signup()
    agent_id, key = await client.register_agent()
    idle_id, _ = await client.register_agent("idle")
    await client.patch(f"/api/agents/{idle_id}", json={"active": False})  # deactivated: ignored
    now = utcnow()
    await Agent.update({Agent.last_seen: now - timedelta(hours=23)}).where(
        Agent.id == uuid.UUID(agent_id)
    )
    await services.alerts.evaluate(now)
    assert await open_alerts("agent_offline") == []

    await services.alerts.evaluate(now + timedelta(hours=2))
    offline = await open_alerts("agent_offline")
    assert [a["subject"] for a in offline] == [f"agent:{agent_id}"]
    assert "laptop" in offline[0]["message"]

    await Agent.update({Agent.last_seen: now + timedelta(hours=2)}).where(
        Agent.id == uuid.UUID(agent_id)
    )
    await services.alerts.evaluate(now + timedelta(hours=2, minutes=1))
    assert await open_alerts("agent_offline") == []


async def test_backup_failed_only_when_no_retry_follows(app: tuple[ApiClient, Services]) -> None:
    client, services = app
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id)
    now = utcnow()
    await add_backup(client, key, config["id"], status="failed", at=now, attempt=1, max_attempts=3)
    await services.alerts.evaluate(now)
    assert await open_alerts("backup_failed") == []

    last = await add_backup(
        client,
        key,
        config["id"],
        status="failed",
        at=now + timedelta(minutes=2),
        attempt=3,
        max_attempts=3,
    )
    await services.alerts.evaluate(now + timedelta(minutes=3))
    failed = await open_alerts("backup_failed")
    assert [a["subject"] for a in failed] == [f"backup:{last}"]
    assert "after 3 attempts" in failed[0]["message"]
    assert "disk on fire" in failed[0]["message"]

    await add_backup(client, key, config["id"], at=now + timedelta(minutes=10))
    await services.alerts.evaluate(now + timedelta(minutes=11))
    assert await open_alerts("backup_failed") == []
    # Resolved for good: the same failure is not reported again.
    await services.alerts.evaluate(now + timedelta(minutes=12))
    assert await open_alerts("backup_failed") == []


async def test_owner_json_and_dashboard_show_only_their_alerts(
    app: tuple[ApiClient, Services],
) -> None:
    client, services = app
    await client.signup()
    agent_id, key = await client.register_agent("Ada's <laptop>")
    now = utcnow()
    await services.alerts.evaluate(now + timedelta(days=3))
    r = await client.get("/api/alerts")
    assert r.status_code == 200
    alerts = r.json()["alerts"]
    assert [a["kind"] for a in alerts] == ["agent_offline"]
    assert alerts[0]["subject"] == f"agent:{agent_id}" and alerts[0]["createdAt"]

    page = await client.get("/")
    assert page.status_code == 200
    assert "Alerts" in page.text and "Ada&#39;s &lt;laptop&gt;" in page.text
    assert "Ada's <laptop>" not in page.text

    # Another user sees none of them.
    await client.post("/api/auth/logout")
    client.raw.cookies.clear()
    await services.accounts.create_user("other@example.com", "correct horse")
    await client.login("other@example.com", "correct horse")
    r = await client.get("/api/alerts")
    assert r.status_code == 200 and r.json()["alerts"] == []
    anonymous = await httpx.AsyncClient(
        transport=client.raw._transport, base_url="http://testserver.local"
    ).get("/api/alerts")
    assert anonymous.status_code == 401


# --- delivery ------------------------------------------------------------------------------------


@pytest.fixture
async def notifying_app(
    tmp_path: Path, sqlite_url: str, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> AsyncIterator[tuple[ApiClient, Services]]:
    async for pair in _app(
        tmp_path,
        sqlite_url,
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        smtp_starttls=False,
        smtp_from="alerts@backapp.test",
        alert_webhook_url=webhook_sink.url,
        notify_timeout=5.0,
    ):
        yield pair


async def test_an_alert_reaches_smtp_and_the_webhook(
    notifying_app: tuple[ApiClient, Services], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    client, services = notifying_app
    await client.signup("ada@example.com")
    agent_id, _ = await client.register_agent()
    now = utcnow() + timedelta(days=2)

    report = await services.tasks.run_alerts(now)
    assert report is not None and len(report.opened) == 1 and report.notified == report.opened

    assert len(smtp_sink.messages) == 1
    mail = smtp_sink.messages[0]
    assert mail.recipients == ["ada@example.com"]
    assert mail.message["From"] == "alerts@backapp.test"
    assert "laptop" in mail.message["Subject"]
    assert "has not been in touch" in mail.message.get_content()

    assert len(webhook_sink.posts) == 1
    post = webhook_sink.posts[0]
    assert post["content_type"] == "application/json"
    assert post["json"]["alert"]["kind"] == "agent_offline"
    assert post["json"]["alert"]["subject"] == f"agent:{agent_id}"
    assert post["json"]["alert"]["userEmail"] == "ada@example.com"

    rows = await open_alerts()
    assert rows[0]["notified_at"] is not None and rows[0]["notify_error"] is None

    # Delivered once: the next round sends nothing.
    await services.tasks.run_alerts(now + timedelta(minutes=1))
    assert len(smtp_sink.messages) == 1 and len(webhook_sink.posts) == 1


async def test_failed_deliveries_are_recorded_and_retried(
    notifying_app: tuple[ApiClient, Services], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    client, services = notifying_app
    await client.signup("ada@example.com")
    await client.register_agent()
    smtp_sink.fail = True
    webhook_sink.status = 500
    now = utcnow() + timedelta(days=2)

    report = await services.tasks.run_alerts(now)
    assert report is not None and report.notified == [] and len(report.notify_failed) == 1
    row = (await open_alerts())[0]
    assert row["notified_at"] is None
    assert "e-mail to ada@example.com failed" in row["notify_error"]
    assert "webhook answered 500" in row["notify_error"]

    smtp_sink.fail = False
    webhook_sink.status = 204
    report = await services.tasks.run_alerts(now + timedelta(minutes=1))
    assert report is not None and len(report.notified) == 1
    assert len(smtp_sink.messages) == 1 and len(webhook_sink.posts) == 1
    row = (await open_alerts())[0]
    assert row["notified_at"] is not None and row["notify_error"] is None


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_a_dead_receiver_cannot_stall_the_loop(
    tmp_path: Path, sqlite_url: str, silent_port: int
) -> None:
    async for client, services in _app(
        tmp_path,
        sqlite_url,
        smtp_host="127.0.0.1",
        smtp_port=silent_port,
        smtp_starttls=False,
        alert_webhook_url=f"http://127.0.0.1:{silent_port}/hook",
        notify_timeout=0.5,
    ):
        await client.signup()
        await client.register_agent()
        started = time.monotonic()
        report = await services.tasks.run_alerts(utcnow() + timedelta(days=2))
        assert time.monotonic() - started < 10
        assert report is not None and len(report.notify_failed) == 1
        row = (await open_alerts())[0]
        assert "timed out" in row["notify_error"].lower() or "Timeout" in row["notify_error"]
