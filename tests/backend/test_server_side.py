"""Server-side execution: who may create such configs, schedules with a controllable clock,
catch-up, retries, Back Up Now, leases, and a backup that runs through the task loop (local storage
and a real S3 endpoint on loopback) then restores with ``backapp restore``."""

from __future__ import annotations

import asyncio
import filecmp
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.app import create_app
from backend.backups.tables import Alert, BackupConfig, BackupLog, RunRequest
from backend.services import Services
from backend.services.leases import config_lease_name
from backend.services.server_side import check_server_sources, retry_policy
from backend.services.tasks import PeriodicTasks
from backend.storage import LocalStorage, S3Storage
from tests.conftest import ROOT, SECRET, make_settings
from tests.support.api import ApiClient
from tests.support.s3 import S3Endpoint

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC


def make_tree(root: Path) -> Path:
    data = root / "data"
    (data / "sub dir").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub dir" / "b.bin").write_bytes(os.urandom(200_000))
    (data / "sub dir" / "naïve.txt").write_text("unicode name\n")
    return data


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "srv"
    root.mkdir()
    return root


async def _app(
    tmp_path: Path, db_url: str, storage_kind: str, roots: Path, s3: tuple[S3Endpoint, str] | None
) -> AsyncIterator[tuple[ApiClient, Services]]:
    overrides: dict[str, Any] = {"server_source_roots": (str(roots),)}
    if storage_kind == "s3":
        assert s3 is not None
        overrides["s3_bucket"] = s3[1]
    settings = make_settings(tmp_path, db_url, **overrides)
    storage: Any
    if storage_kind == "s3":
        assert s3 is not None
        endpoint, bucket = s3
        storage = S3Storage(
            bucket=bucket,
            region=endpoint.region,
            endpoint_url=endpoint.endpoint_url,
            access_key_id=endpoint.access_key_id,
            secret_access_key=endpoint.secret_access_key,
        )
    else:
        storage = LocalStorage(
            root=settings.data_dir / "storage",
            base_url=settings.base_url,
            secret=settings.secret_key,
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
async def app(
    tmp_path: Path, db_url: str, roots: Path
) -> AsyncIterator[tuple[ApiClient, Services]]:
    async for pair in _app(tmp_path, db_url, "local", roots, None):
        yield pair


async def server_config(
    client: ApiClient, sources: list[str], *, created: datetime = T0, **options: Any
) -> dict[str, Any]:
    r = await client.post(
        "/api/configs",
        json={
            "name": "Server data",
            "executionMode": "server",
            "sources": [{"path": p} for p in sources],
            "options": options,
        },
    )
    assert r.status_code == 201, r.text
    config = dict(r.json()["config"])
    await BackupConfig.update({BackupConfig.created_at: created}).where(
        BackupConfig.id == uuid.UUID(config["id"])
    )
    return config


async def backups_of(config_id: str) -> list[dict[str, Any]]:
    rows = (
        await BackupLog.select()
        .where(BackupLog.config == uuid.UUID(config_id))
        .order_by(BackupLog.started_at)
    )
    return list(rows)


async def tick(services: Services, now: datetime) -> None:
    await services.tasks.run_server_side(now)
    await services.tasks.runner.wait()


# --- who may create server-side configs ------------------------------------------------------------


async def test_only_admins_with_allowed_roots_create_server_configs(
    tmp_path: Path, sqlite_url: str, roots: Path
) -> None:
    async for client, services in _app(tmp_path, sqlite_url, "local", roots, None):
        await client.signup()  # the first account: admin
        inside = str(roots / "data")
        ok = await client.post(
            "/api/configs",
            json={"name": "x", "executionMode": "server", "sources": [{"path": inside}]},
        )
        assert ok.status_code == 201, ok.text
        outside = await client.post(
            "/api/configs",
            json={"name": "x", "executionMode": "server", "sources": [{"path": "/etc"}]},
        )
        assert outside.status_code == 400 and outside.json()["field"] == "sources"
        assert "outside the folders" in outside.json()["detail"]
        sneaky = await client.post(
            "/api/configs",
            json={
                "name": "x",
                "executionMode": "server",
                "sources": [{"path": f"{roots}/../../etc"}],
            },
        )
        assert sneaky.status_code == 400
        relative = await client.post(
            "/api/configs",
            json={"name": "x", "executionMode": "server", "sources": [{"path": "data"}]},
        )
        assert relative.status_code == 400 and "absolute" in relative.json()["detail"]
        config_id = ok.json()["config"]["id"]
        moved = await client.patch(
            f"/api/configs/{config_id}", json={"sources": [{"path": "/root"}]}
        )
        assert moved.status_code == 400

        # A second, non-admin user.
        await client.post("/api/auth/logout")
        client.raw.cookies.clear()
        await services.accounts.create_user("bob@example.com", "correct horse")
        assert (await client.login("bob@example.com", "correct horse")).status_code == 200
        refused = await client.post(
            "/api/configs",
            json={"name": "x", "executionMode": "server", "sources": [{"path": inside}]},
        )
        assert refused.status_code == 403 and refused.json()["field"] == "executionMode"
        agent_id, _ = await client.register_agent()
        mine = await client.create_config(agent_id)
        switched = await client.patch(
            f"/api/configs/{mine['id']}", json={"executionMode": "server"}
        )
        assert switched.status_code == 403
        assert await BackupConfig.count().where(BackupConfig.execution_mode == "server") == 1


async def test_server_mode_is_disabled_without_roots(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, server_source_roots=())
    services = Services.build(settings)
    app = create_app(settings, services)
    await app.state.runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as raw:
            client = ApiClient(raw)
            await client.signup()
            r = await client.post(
                "/api/configs",
                json={"name": "x", "executionMode": "server", "sources": [{"path": "/srv"}]},
            )
            assert r.status_code == 400
            assert "BACKAPP_SERVER_SOURCE_ROOTS" in r.json()["detail"]
    finally:
        await app.state.runtime.stop()


def test_source_checks_resolve_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    check_server_sources([str(root / "escape")], [str(root)], resolve=False)
    with pytest.raises(Exception, match="outside the folders"):
        check_server_sources([str(root / "escape")], [str(root)], resolve=True)
    with pytest.raises(Exception, match="outside"):
        check_server_sources([str(tmp_path / "rootx")], [str(root)], resolve=False)


def test_retry_policy_defaults_and_bounds() -> None:
    assert retry_policy({}) == (3, 60)
    assert retry_policy({"retry": {"attempts": 5, "delaySeconds": 10}}) == (5, 10)
    assert retry_policy({"retry": {"attempts": 50, "delaySeconds": -1}}) == (10, 60)
    assert retry_policy({"retry": {"attempts": 0}}) == (1, 60)


# --- scheduling ---------------------------------------------------------------------------------


async def test_schedule_runs_once_per_slot_with_catch_up(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    client, services = app
    await client.signup()
    data = make_tree(roots)
    config = await server_config(
        client, [str(data)], schedule={"preset": "hourly", "minute": 30}, created=T0
    )

    await tick(services, T0 + timedelta(minutes=29))
    assert await backups_of(config["id"]) == []

    await tick(services, T0 + timedelta(minutes=31))
    runs = await backups_of(config["id"])
    assert [(r["status"], r["trigger"], r["attempt"]) for r in runs] == [
        ("completed", "schedule", 1)
    ]
    user_id = (await client.get("/api/auth/me")).json()["user"]["id"]
    assert runs[0]["agent"] is None
    assert runs[0]["s3_path"].startswith(f"users/{user_id}/server/configs/{config['id']}/")
    assert runs[0]["files_processed"] == 3 and runs[0]["max_attempts"] == 3

    # The same slot again (another round, or another process): nothing more.
    await tick(services, T0 + timedelta(minutes=45))
    assert len(await backups_of(config["id"])) == 1

    # Down for five hours: one catch-up run, not five.
    await tick(services, T0 + timedelta(hours=5, minutes=40))
    assert len(await backups_of(config["id"])) == 2
    await tick(services, T0 + timedelta(hours=5, minutes=50))
    assert len(await backups_of(config["id"])) == 2

    shown = await client.get(f"/api/backups?configId={config['id']}")
    assert [b["trigger"] for b in shown.json()["backups"]] == ["schedule", "schedule"]
    assert all(b["agentId"] is None for b in shown.json()["backups"])


async def test_failed_scheduled_backup_is_retried_with_backoff(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    client, services = app
    await client.signup()
    missing = roots / "not-yet"
    config = await server_config(
        client,
        [str(missing)],
        schedule={"preset": "daily", "at": "09:30"},
        retry={"attempts": 3, "delaySeconds": 60},
    )
    t = T0 + timedelta(minutes=31)
    await tick(services, t)
    runs = await backups_of(config["id"])
    assert [(r["status"], r["trigger"], r["attempt"]) for r in runs] == [("failed", "schedule", 1)]
    failed_at = runs[0]["completed_at"]
    assert failed_at is not None
    first_done = runs[0]["completed_at"].replace(tzinfo=UTC)

    # Before the delay: no retry; after 60 s: attempt 2.
    await tick(services, first_done + timedelta(seconds=30))
    assert len(await backups_of(config["id"])) == 1
    await tick(services, first_done + timedelta(seconds=61))
    runs = await backups_of(config["id"])
    assert [(r["trigger"], r["attempt"], r["max_attempts"]) for r in runs] == [
        ("schedule", 1, 3),
        ("retry", 2, 3),
    ]
    # The delay doubles: attempt 3 comes 120 s after attempt 2 failed.
    second_done = runs[1]["completed_at"].replace(tzinfo=UTC)
    await tick(services, second_done + timedelta(seconds=100))
    assert len(await backups_of(config["id"])) == 2
    # Now the folder exists: the last attempt succeeds.
    make_tree(roots)
    (roots / "data").rename(missing)
    await tick(services, second_done + timedelta(seconds=121))
    runs = await backups_of(config["id"])
    assert [(r["status"], r["attempt"]) for r in runs] == [
        ("failed", 1),
        ("failed", 2),
        ("completed", 3),
    ]
    await tick(services, second_done + timedelta(seconds=900))
    assert len(await backups_of(config["id"])) == 3


async def test_a_scheduled_run_whose_server_process_died_is_retried(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    """An interrupted run (its server process died mid-backup) gets the retries a failed one
    gets: nobody decided it failed, and the slot still has no backup."""
    client, services = app
    await client.signup()
    config = await server_config(
        client,
        [str(make_tree(roots))],
        schedule={"preset": "daily", "at": "09:30"},
        retry={"attempts": 3, "delaySeconds": 60},
    )
    await tick(services, T0 + timedelta(minutes=31))
    [run] = await backups_of(config["id"])
    died_at = T0 + timedelta(minutes=32)
    await BackupLog.update(
        {BackupLog.status: "interrupted", BackupLog.error: "gone", BackupLog.completed_at: died_at}
    ).where(BackupLog.id == run["id"])
    await tick(services, died_at + timedelta(seconds=30))
    assert len(await backups_of(config["id"])) == 1
    await tick(services, died_at + timedelta(seconds=61))
    runs = await backups_of(config["id"])
    assert [(r["status"], r["trigger"], r["attempt"]) for r in runs] == [
        ("interrupted", "schedule", 1),
        ("completed", "retry", 2),
    ]


async def test_last_failed_attempt_raises_an_alert(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    client, services = app
    await client.signup()
    config = await server_config(
        client,
        [str(roots / "missing")],
        schedule={"preset": "daily", "at": "09:30"},
        retry={"attempts": 2, "delaySeconds": 1},
    )
    t = T0 + timedelta(minutes=31)
    await tick(services, t)
    await services.alerts.evaluate(t + timedelta(seconds=1))
    assert await Alert.count().where(Alert.kind == "backup_failed") == 0  # a retry follows
    await tick(services, t + timedelta(minutes=5))
    runs = await backups_of(config["id"])
    assert [r["attempt"] for r in runs] == [1, 2]
    await services.alerts.evaluate(t + timedelta(minutes=6))
    alerts = await Alert.select().where(Alert.kind == "backup_failed")
    assert [a["subject"] for a in alerts] == [f"backup:{runs[1]['id']}"]


async def test_back_up_now_request_is_picked_up(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    client, services = app
    await client.signup()
    data = make_tree(roots)
    config = await server_config(client, [str(data)])  # no schedule
    r = await client.post(f"/api/configs/{config['id']}/run")
    assert r.status_code == 202, r.text
    request_id = r.json()["runRequest"]["id"]
    # The request's live message wakes the loop, and a round would start it too: whichever comes
    # first takes it, and only once.
    await asyncio.gather(tick(services, datetime.now(UTC)), tick(services, datetime.now(UTC)))
    for _ in range(200):
        runs = await backups_of(config["id"])
        if runs and runs[0]["status"] != "running":
            break
        await asyncio.sleep(0.05)
    await services.tasks.runner.wait()
    runs = await backups_of(config["id"])
    assert [(r["status"], r["trigger"], r["run_request"]) for r in runs] == [
        ("completed", "request", request_id)
    ]
    request = await RunRequest.select().where(RunRequest.id == uuid.UUID(request_id)).first()
    assert request is not None and request["status"] == "started"
    assert request["backup_id"] == str(runs[0]["id"])
    # Taken once only.
    await tick(services, datetime.now(UTC))
    assert len(await backups_of(config["id"])) == 1


async def test_a_held_config_lease_blocks_the_run(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    client, services = app
    await client.signup()
    data = make_tree(roots)
    config = await server_config(client, [str(data)], schedule={"cron": "*/5 * * * *"})
    grant = await services.leases.acquire(
        config_lease_name(config["id"]), "agent elsewhere", 600, now=datetime.now(UTC)
    )
    assert grant is not None
    await tick(services, T0 + timedelta(minutes=6))
    assert await backups_of(config["id"]) == []
    await services.leases.release(config_lease_name(config["id"]), grant.token)
    await tick(services, T0 + timedelta(minutes=7))
    assert len(await backups_of(config["id"])) == 1


async def test_two_task_runners_never_double_run_a_slot(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    client, services = app
    await client.signup()
    data = make_tree(roots)
    config = await server_config(client, [str(data)], schedule={"cron": "* * * * *"})
    first = PeriodicTasks(services.settings, services.storage, holder="server A")
    second = PeriodicTasks(services.settings, services.storage, holder="server B")
    for minute in range(1, 4):
        now = T0 + timedelta(minutes=minute, seconds=10)
        await asyncio.gather(first.run_server_side(now), second.run_server_side(now))
        await asyncio.gather(first.runner.wait(), second.runner.wait())
    runs = await backups_of(config["id"])
    assert [r["status"] for r in runs] == ["completed"] * 3


async def test_a_source_that_became_a_link_outside_is_refused(
    app: tuple[ApiClient, Services], roots: Path, tmp_path: Path
) -> None:
    client, services = app
    await client.signup()
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("do not back me up")
    config = await server_config(
        client, [str(roots / "link")], schedule={"preset": "hourly", "minute": 0}
    )
    (roots / "link").symlink_to(outside)
    await tick(services, T0 + timedelta(minutes=65))
    runs = await backups_of(config["id"])
    assert [r["status"] for r in runs] == ["failed"]
    assert "outside the folders" in runs[0]["error"]


# --- backup then restore ---------------------------------------------------------------------------


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_server_side_backup_runs_and_restores(
    tmp_path: Path,
    db_url: str,
    roots: Path,
    storage_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    s3: tuple[S3Endpoint, str] | None = None
    if storage_kind == "s3":
        s3 = (request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))
    async for client, services in _app(tmp_path, db_url, storage_kind, roots, s3):
        await client.signup()
        data = make_tree(roots)
        config = await server_config(
            client, [str(data)], schedule={"preset": "daily", "at": "09:15"}
        )
        await tick(services, T0 + timedelta(minutes=16))
        runs = await backups_of(config["id"])
        assert [r["status"] for r in runs] == ["completed"], runs
        backup_id = str(runs[0]["id"])
        if s3 is not None:
            stored = s3[0].client().head_object(Bucket=s3[1], Key=runs[0]["s3_path"])
            assert stored["ContentLength"] == runs[0]["size"]

        # The owner's download link works like any other backup's.
        download = await client.get(f"/api/backups/{backup_id}/download")
        assert download.status_code == 200

        target = tmp_path / "restored"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BACKAPP_"))},
            "DATABASE_URL": db_url,
            "BACKAPP_DATA_DIR": str(services.settings.data_dir),
            "BACKAPP_SECRET_KEY": SECRET.decode(),
            "BACKAPP_PUBLIC_URL": services.settings.base_url,
        }
        if s3 is not None:
            env.update(
                {
                    "AWS_S3_BUCKET": s3[1],
                    "AWS_S3_ENDPOINT": s3[0].endpoint_url,
                    "AWS_REGION": s3[0].region,
                    "AWS_ACCESS_KEY_ID": s3[0].access_key_id,
                    "AWS_SECRET_ACCESS_KEY": s3[0].secret_access_key,
                }
            )
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "backend.cli", "restore", backup_id, "--to", str(target)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "restored 3 files" in done.stdout
        restored = target / str(data).lstrip("/")
        comparison = filecmp.dircmp(data, restored)
        assert comparison.left_list == comparison.right_list
        for name in ("a.txt", "sub dir/b.bin", "sub dir/naïve.txt"):
            assert (restored / name).read_bytes() == (data / name).read_bytes()

        # An unknown or expired backup: a clear refusal.
        bad = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "backend.cli", "restore", str(uuid.uuid4()), "--to", "x"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 1 and "no backup" in bad.stderr


def test_the_last_fire_time_is_never_in_the_future() -> None:
    """Regression: a moment a fraction of a second before a fire time must not count it as past
    (two servers ran the 13:33 slot over and over from 13:32:59 on)."""
    from desktop_agent.engine.schedule import Schedule

    schedule = Schedule.parse({"cron": "* * * * *"})
    assert schedule is not None
    before = datetime(2026, 1, 1, 13, 32, 59, 500_000, tzinfo=UTC)
    assert schedule.last_at_or_before(before, UTC) == datetime(2026, 1, 1, 13, 32, tzinfo=UTC)
    exact = datetime(2026, 1, 1, 13, 33, tzinfo=UTC)
    assert schedule.last_at_or_before(exact, UTC) == exact
    assert schedule.due(exact - timedelta(seconds=0.5), before, UTC) is None


async def test_back_up_now_wakes_the_loop_at_once(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    """The loop's interval is an hour here: the request's live message starts the run."""
    client, services = app
    assert services.settings.task_interval == 3600
    await client.signup()
    data = make_tree(roots)
    config = await server_config(client, [str(data)])
    r = await client.post(f"/api/configs/{config['id']}/run")
    assert r.status_code == 202, r.text
    for _ in range(200):
        runs = await backups_of(config["id"])
        if runs and runs[0]["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert [(r["status"], r["trigger"]) for r in runs] == [("completed", "request")]


async def test_a_large_server_side_backup_goes_up_in_parts(
    app: tuple[ApiClient, Services], roots: Path
) -> None:
    """Above the engine's 16 MiB threshold the upload is multipart, through the same in-process
    part URLs and assembly as an agent's."""
    client, services = app
    await client.signup()
    data = roots / "big"
    data.mkdir()
    (data / "noise.bin").write_bytes(os.urandom(18 * 1024 * 1024))
    config = await server_config(client, [str(data)], schedule={"preset": "hourly", "minute": 0})
    await tick(services, T0 + timedelta(hours=1, minutes=1))
    runs = await backups_of(config["id"])
    assert [(r["status"], r["upload_state"]) for r in runs] == [("completed", "assembled")], runs
    assert runs[0]["size"] > 18 * 1024 * 1024
    assert isinstance(services.storage, LocalStorage)
    stored = services.storage.object_path(runs[0]["s3_path"])
    assert stored.stat().st_size == runs[0]["size"]
    assert runs[0]["part_checksum"] == "crc32"  # the server's own engine uses CRC32 parts too


def test_settings_of_the_periodic_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.settings import Settings

    monkeypatch.setenv("BACKAPP_SECRET_KEY", "x" * 32)
    monkeypatch.setenv("BACKAPP_SERVER_SOURCE_ROOTS", "/srv/data:/home/shared/")
    monkeypatch.setenv("BACKAPP_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("BACKAPP_TASK_INTERVAL", "2.5")
    monkeypatch.setenv("BACKAPP_SMTP_STARTTLS", "false")
    s = Settings.from_env()
    assert s.server_source_roots == ("/srv/data", "/home/shared")
    assert s.timezone == "Europe/Paris" and s.task_interval == 2.5
    assert s.smtp_starttls is False and s.smtp_port == 587 and s.alert_offline_minutes == 1440
    monkeypatch.setenv("BACKAPP_SERVER_SOURCE_ROOTS", "relative/path")
    with pytest.raises(ValueError, match="not an absolute path"):
        Settings.from_env()
    monkeypatch.delenv("BACKAPP_SERVER_SOURCE_ROOTS")
    monkeypatch.setenv("BACKAPP_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="IANA time zone"):
        Settings.from_env()
