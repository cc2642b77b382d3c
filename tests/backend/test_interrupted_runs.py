"""A run's liveness is its lease: a backup whose runner died becomes ``interrupted``, its multipart
upload is aborted and its config is free again; a restarted agent takes over the lease of its own
dead process at once. Real app, real database (SQLite and PostgreSQL), local storage."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from backend.accounts.tables import User
from backend.backups.tables import BackupLog, Lease
from backend.services import Services
from backend.services.backups import NewBackup
from backend.services.clock import utcnow
from backend.services.leases import SERVER_OWNER
from backend.services.orphans import AGENT_STOPPED, SERVER_STOPPED, TAKEN_OVER, UNLEASED_STOPPED
from tests.support.api import ApiClient

FILENAME = "backup-2025-01-07-143022.tar.gz"


async def _setup(client: ApiClient) -> tuple[str, str, str]:
    await client.signup()
    agent_id, key = await client.register_agent("laptop", "linux")
    config = await client.create_config(agent_id)
    return agent_id, key, config["id"]


async def _lease(client: ApiClient, key: str, config_id: str, **extra: Any) -> Any:
    body = {"configId": config_id, "ttlSeconds": 30, **extra}
    return await client.agent_post(key, "/api/agent/lease", body)


async def _start(
    client: ApiClient, key: str, config_id: str, filename: str = FILENAME
) -> dict[str, Any]:
    body = {"configId": config_id, "filename": filename, "filesize": 11, "multipart": True}
    r = await client.agent_post(key, "/api/agent/backup/start", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _uploads(services: Services) -> list[Path]:
    root = services.settings.data_dir / "storage" / "uploads"
    return sorted(root.iterdir()) if root.exists() else []


async def _backup(client: ApiClient, log_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/backups/{log_id}")
    assert r.status_code == 200, r.text
    return dict(r.json()["backup"])


async def _lapse(config_id: str) -> None:
    """Time passes for the lease: its holder stopped renewing it 31 s ago."""
    await Lease.update({Lease.expires_at: utcnow() - timedelta(seconds=1)}).where(
        Lease.name == f"config:{config_id}"
    )


async def test_a_run_whose_lease_lapsed_becomes_interrupted_and_its_upload_is_aborted(
    client: ApiClient, services: Services
) -> None:
    await services.tasks.started()
    _, key, config_id = await _setup(client)
    held = await _lease(client, key, config_id, instance="proc-a")
    assert held.status_code == 200, held.text
    start = await _start(client, key, config_id)
    assert len(_uploads(services)) == 1
    assert (await _backup(client, start["logId"]))["status"] == "running"

    # While the lease is live the run is alive, whatever the housekeeping says.
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and report.interrupted == 0
    assert (await _backup(client, start["logId"]))["status"] == "running"

    # The agent was killed: nobody renews the lease; once it lapsed, the run is a ghost.
    await _lapse(config_id)
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and (report.interrupted, report.uploads_aborted) == (1, 0)
    backup = await _backup(client, start["logId"])
    assert backup["status"] == "interrupted" and backup["error"] == AGENT_STOPPED
    assert backup["completedAt"] is not None and backup["progress"] is None
    assert _uploads(services) == []  # storage freed the parts
    row = await BackupLog.select(BackupLog.upload_state).first()
    assert row is not None and row["upload_state"] == "aborted"
    listed = (await client.get("/api/backups", params={"status": "interrupted"})).json()
    assert [b["id"] for b in listed["backups"]] == [start["logId"]]

    # the dead run can no longer be finished, renewed or continued
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start["logId"], "status": "completed", "bytesTransferred": 1},
    )
    assert done.status_code == 409 and "already interrupted" in done.json()["detail"]
    renew = await client.agent_post(
        key,
        "/api/agent/lease/renew",
        {"configId": config_id, "token": held.json()["lease"]["token"], "ttlSeconds": 30},
    )
    assert renew.status_code == 409
    # an interrupted run is not a failure: no "backup failed" alert
    alerts = await services.tasks.run_alerts(utcnow())
    assert alerts is not None
    assert (await client.get("/api/alerts")).json()["alerts"] == []
    # and the config is free: a new run starts at once
    again = await _lease(client, key, config_id, instance="proc-b")
    assert again.status_code == 200, again.text
    # the next round has nothing left to do
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and (report.interrupted, report.uploads_aborted) == (0, 0)


async def test_a_new_run_after_a_lapse_interrupts_the_old_one_at_once(
    client: ApiClient, services: Services
) -> None:
    """No housekeeping round needed: taking the lapsed lease ends the run it guarded."""
    await services.tasks.started()
    _, key, config_id = await _setup(client)
    assert (await _lease(client, key, config_id)).status_code == 200
    old = await _start(client, key, config_id)
    await _lapse(config_id)
    assert (await _lease(client, key, config_id)).status_code == 200
    backup = await _backup(client, old["logId"])
    assert backup["status"] == "interrupted" and backup["error"] == AGENT_STOPPED
    assert _uploads(services) == []
    new = await _start(client, key, config_id, "backup-2025-01-07-143023.tar.gz")
    assert (await _backup(client, new["logId"]))["status"] == "running"


async def test_a_restarted_agent_takes_over_the_lease_of_its_dead_process(
    client: ApiClient, services: Services
) -> None:
    await services.tasks.started()
    agent_id, key, config_id = await _setup(client)
    held = await _lease(client, key, config_id, instance="proc-a")
    assert held.status_code == 200, held.text
    old = await _start(client, key, config_id)

    # Without naming the dead process, the lease is busy (another live process of this agent
    # may be running the config), as before.
    busy = await _lease(client, key, config_id, instance="proc-b")
    assert busy.status_code == 409 and "already running on agent laptop" in busy.json()["detail"]
    # Naming some other process does not help either.
    other = await _lease(client, key, config_id, instance="proc-b", takeOver=["proc-x"])
    assert other.status_code == 409
    # Another agent cannot take it over, whatever it names (even once the config is its own).
    other_id, stranger = await client.register_agent("desktop", "linux")
    r = await client.patch(f"/api/configs/{config_id}", json={"agentId": other_id})
    assert r.status_code == 200, r.text
    theirs = await _lease(client, stranger, config_id, instance="proc-z", takeOver=["proc-a"])
    assert theirs.status_code == 409, theirs.text
    r = await client.patch(f"/api/configs/{config_id}", json={"agentId": agent_id})
    assert r.status_code == 200, r.text

    taken = await _lease(client, key, config_id, instance="proc-b", takeOver=["proc-a", "p-c"])
    assert taken.status_code == 200, taken.text
    assert taken.json()["lease"]["token"] != held.json()["lease"]["token"]
    backup = await _backup(client, old["logId"])
    assert backup["status"] == "interrupted" and backup["error"] == TAKEN_OVER
    assert _uploads(services) == []
    lease = await Lease.select(Lease.instance, Lease.owner).first()
    assert lease == {"instance": "proc-b", "owner": f"agent:{agent_id}"}
    # the dead process's token is useless now
    renew = await client.agent_post(
        key,
        "/api/agent/lease/renew",
        {"configId": config_id, "token": held.json()["lease"]["token"]},
    )
    assert renew.status_code == 409
    # a live lease of the new process is not taken over by naming the old one again
    again = await _lease(client, key, config_id, instance="proc-c", takeOver=["proc-a"])
    assert again.status_code == 409


async def test_instance_ids_are_checked(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    for body in (
        {"instance": ""},
        {"instance": "a" * 65},
        {"instance": "a b"},
        {"takeOver": ["ok", "not/ok"]},
        {"takeOver": [f"p{i}" for i in range(33)]},
    ):
        r = await _lease(client, key, config_id, **body)
        assert r.status_code == 400, (body, r.text)


async def test_a_run_that_took_no_lease_is_given_up_after_a_day(
    client: ApiClient, services: Services
) -> None:
    await services.tasks.started()
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)  # a client that takes no lease
    report = await services.tasks.run_housekeeping(utcnow() + timedelta(hours=23))
    assert report is not None and report.interrupted == 0
    report = await services.tasks.run_housekeeping(utcnow() + timedelta(hours=25))
    assert report is not None and report.interrupted == 1
    backup = await _backup(client, start["logId"])
    assert backup["status"] == "interrupted" and backup["error"] == UNLEASED_STOPPED
    assert _uploads(services) == []


async def test_housekeeping_aborts_uploads_that_finished_runs_left_behind(
    client: ApiClient, services: Services
) -> None:
    """A run that failed while storage was down could not abort its upload: the next rounds do."""
    await services.tasks.started()
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    await BackupLog.update({BackupLog.status: "failed", BackupLog.error: "storage down"}).where(
        BackupLog.id == uuid.UUID(start["logId"])
    )
    assert len(_uploads(services)) == 1
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and (report.interrupted, report.uploads_aborted) == (0, 1)
    assert _uploads(services) == []
    backup = await _backup(client, start["logId"])
    assert backup["status"] == "failed" and backup["error"] == "storage down"


async def test_a_complete_that_lands_first_wins(client: ApiClient, services: Services) -> None:
    """The sweep only touches logs still ``running``: a finished one is never made a ghost."""
    await services.tasks.started()
    _, key, config_id = await _setup(client)
    assert (await _lease(client, key, config_id)).status_code == 200
    start = await _start(client, key, config_id)
    failed = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start["logId"], "status": "failed", "error": "disk full"},
    )
    assert failed.status_code == 200, failed.text
    await _lapse(config_id)
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and report.interrupted == 0
    backup = await _backup(client, start["logId"])
    assert backup["status"] == "failed" and backup["error"] == "disk full"


async def test_a_server_side_run_whose_server_process_died_becomes_interrupted(
    client: ApiClient, services: Services
) -> None:
    """The server's own runs hold the same lease: a process that dies mid-backup leaves no ghost."""
    await services.tasks.started()
    await client.signup()
    config = await client.create_config(None, sources=[{"path": "/srv/data"}])
    user = await User.select(User.id).first()
    assert user is not None
    config_id = uuid.UUID(config["id"])
    grant = await services.leases.acquire(
        f"config:{config_id}", "server host pid 1", 30, owner=SERVER_OWNER
    )
    assert grant is not None
    log_id, _ = await services.backups.open_upload(
        NewBackup(
            user_id=user["id"],
            agent_id=None,
            config_id=config_id,
            config_name="Daily",
            filename=FILENAME,
            multipart=True,
            trigger="server",
        )
    )
    row = await BackupLog.select(BackupLog.lease_token).first()
    assert row is not None and row["lease_token"] == grant.token
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and report.interrupted == 0
    await _lapse(config["id"])
    report = await services.tasks.run_housekeeping(utcnow())
    assert report is not None and report.interrupted == 1
    backup = await _backup(client, log_id)
    assert backup["status"] == "interrupted" and backup["error"] == SERVER_STOPPED
    assert _uploads(services) == []
