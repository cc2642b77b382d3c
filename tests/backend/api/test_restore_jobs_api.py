"""Restores asked for from the web console, through the real ASGI app on SQLite and PostgreSQL:
the owner's request (202), the agent's heartbeat and WebSocket, start, progress, outcome, the
status the owner reads; another machine is refused (404); a job nobody takes expires after a day."""

from __future__ import annotations

from datetime import datetime, timedelta

from litestar import Litestar

from backend.backups.tables import BackupLog, RestoreJob
from backend.services import Services
from backend.services.clock import utcnow
from backend.services.restore_jobs import JOB_TTL
from tests.support.api import ApiClient, complete_one_backup
from tests.support.asgi import AsgiSocket


async def _backup(client: ApiClient) -> tuple[str, str, str]:
    await client.signup()
    agent_id, key = await client.register_agent("laptop")
    config = await client.create_config(agent_id)
    return agent_id, key, await complete_one_backup(client, key, config["id"])


async def test_a_restore_goes_from_the_owner_to_the_agent_and_back(
    app_client: tuple[Litestar, ApiClient],
) -> None:
    app, client = app_client
    agent_id, key, backup_id = await _backup(client)
    async with AsgiSocket(app, {"X-Agent-API-Key": key}) as socket:
        assert (await socket.receive())["type"] == "hello"
        r = await client.post(
            f"/api/backups/{backup_id}/restore",
            json={"agentId": agent_id, "paths": ["*.txt"], "target": "/home/me/restored"},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["status"] == "pending"
        assert await socket.receive() == {"type": "restore", "restoreId": job_id}

    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.json()["restoreRequests"] == [job_id]

    status = (await client.get(f"/api/restores/{job_id}")).json()["restore"]
    assert status["status"] == "pending" and status["conflict"] == "keep-both"
    assert status["paths"] == ["*.txt"] and status["agentName"] == "laptop"

    start = await client.agent_post(key, f"/api/agent/restores/{job_id}/start", None)
    assert start.status_code == 200, start.text
    assert start.json() == {
        "id": job_id,
        "backupId": backup_id,
        "paths": ["*.txt"],
        "target": "/home/me/restored",
        "conflict": "keep-both",
    }
    again = await client.agent_post(key, f"/api/agent/restores/{job_id}/start", None)
    assert again.status_code == 409  # taken once
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.json()["restoreRequests"] == []

    r = await client.agent_post(
        key, f"/api/agent/restores/{job_id}/progress", {"files": 2, "bytes": 10}
    )
    assert r.status_code == 200, r.text
    status = (await client.get(f"/api/restores/{job_id}")).json()["restore"]
    assert (status["status"], status["files"], status["bytes"]) == ("running", 2, 10)

    r = await client.agent_post(
        key,
        f"/api/agent/restores/{job_id}/complete",
        {"status": "completed", "files": 3, "bytes": 12, "renamed": 1},
    )
    assert r.status_code == 200, r.text
    status = (await client.get(f"/api/restores/{job_id}")).json()["restore"]
    assert status["status"] == "completed" and status["files"] == 3 and status["renamed"] == 1
    assert status["finishedAt"] is not None


async def test_another_machine_and_bad_input_are_refused(client: ApiClient) -> None:
    agent_id, key, backup_id = await _backup(client)
    other_id, other_key = await client.register_agent("desktop")
    url = f"/api/backups/{backup_id}/restore"
    r = await client.post(url, json={"agentId": other_id, "target": "/tmp/x"})
    assert r.status_code == 404 and r.json()["field"] == "agentId", r.text
    r = await client.post(url, json={"agentId": agent_id, "target": "relative/folder"})
    assert r.status_code == 400 and r.json()["field"] == "target", r.text
    r = await client.post(url, json={"agentId": agent_id, "target": "/x", "conflict": "replace"})
    assert r.status_code == 400
    r = await client.raw.post(url, json={"agentId": agent_id, "target": "/x"})  # no CSRF header
    assert r.status_code == 403
    assert await RestoreJob.count() == 0

    r = await client.post(url, json={"agentId": agent_id, "target": "/x", "conflict": "overwrite"})
    job_id = r.json()["id"]
    # another machine of the same owner can neither see nor take it
    r = await client.agent_post(other_key, f"/api/agent/restores/{job_id}/start", None)
    assert r.status_code == 404


async def test_a_job_nobody_takes_expires_after_a_day(client: ApiClient) -> None:
    agent_id, key, backup_id = await _backup(client)
    r = await client.post(
        f"/api/backups/{backup_id}/restore", json={"agentId": agent_id, "target": "/x"}
    )
    job_id = r.json()["id"]
    await RestoreJob.update({RestoreJob.expires_at: utcnow() - timedelta(seconds=1)}).where(
        RestoreJob.id == job_id
    )
    status = (await client.get(f"/api/restores/{job_id}")).json()["restore"]
    assert status["status"] == "expired" and "within a day" in status["error"]
    r = await client.agent_post(key, f"/api/agent/restores/{job_id}/start", None)
    assert r.status_code == 409


class FakeClock:
    """Now, moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


async def test_a_restore_for_an_offline_machine_waits_a_day_on_the_page_then_expires(
    app_client: tuple[Litestar, ApiClient], services: Services
) -> None:
    """The machine is off (no socket, no heartbeat): the job stays ``pending`` and the backup's
    page says it waits for the machine, until when; a day later (a fake clock) it is ``expired``
    on the API and on the page, the machine coming back is not offered it and cannot take it."""
    _app, client = app_client
    clock = FakeClock()
    services.restore_jobs.clock = clock
    agent_id, key, backup_id = await _backup(client)
    r = await client.post(
        f"/api/backups/{backup_id}/restore", json={"agentId": agent_id, "target": "/home/me/x"}
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def row(page: str) -> str:
        start = page.index(f'data-restore="{job_id}"')
        return page[start : page.index("</tr>", start)]

    clock.now += JOB_TTL - timedelta(minutes=1)
    status = (await client.get(f"/api/restores/{job_id}")).json()["restore"]
    assert status["status"] == "pending" and status["error"] is None
    page = (await client.get(f"/backups/{backup_id}")).text
    assert 'data-status="pending"' in row(page) and "waiting for the machine" in row(page)
    assert "until " in row(page)

    clock.now += timedelta(minutes=1, seconds=1)
    status = (await client.get(f"/api/restores/{job_id}")).json()["restore"]
    assert status["status"] == "expired" and "within a day" in status["error"]
    page = (await client.get(f"/backups/{backup_id}")).text
    assert 'data-status="expired"' in row(page) and "within a day" in row(page)
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.json()["restoreRequests"] == []
    r = await client.agent_post(key, f"/api/agent/restores/{job_id}/start", None)
    assert r.status_code == 409 and "not pending" in r.text


async def test_a_machine_that_replaces_the_old_one_may_restore_its_archives(
    client: ApiClient,
) -> None:
    """The owner's inherit mark widens who may restore: the new machine gets the old one's full
    archives; an old *snapshot* is refused in words (its key opens only with the recovery code,
    which the server never has)."""
    old_id, _key, backup_id = await _backup(client)
    new_id, _ = await client.register_agent("new-desktop")
    url = f"/api/backups/{backup_id}/restore"
    offered = '<option value="new-desktop">'
    assert offered not in (await client.get(f"/backups/{backup_id}")).text
    r = await client.post(url, json={"agentId": new_id, "target": "/home/me/old"})
    assert r.status_code == 404, r.text

    mark = await client.post(f"/api/agents/{new_id}/inherit", json={"fromAgentId": old_id})
    assert mark.status_code == 201, mark.text
    assert offered in (await client.get(f"/backups/{backup_id}")).text
    r = await client.post(url, json={"agentId": new_id, "target": "/home/me/old"})
    assert r.status_code == 202, r.text
    assert (await client.get(f"/api/restores/{r.json()['id']}")).json()["restore"][
        "agentName"
    ] == "new-desktop"

    await BackupLog.update({BackupLog.backup_type: "incremental"}).where(BackupLog.id == backup_id)
    r = await client.post(url, json={"agentId": new_id, "target": "/home/me/old"})
    assert r.status_code == 409 and "recovery code" in r.json()["detail"], r.text
    assert offered not in (await client.get(f"/backups/{backup_id}")).text
    assert await RestoreJob.count() == 1


async def test_an_inherited_encrypted_archive_is_refused_in_words(client: ApiClient) -> None:
    """An encrypted archive opens with its machine's key or the recovery code: the machine that
    made it may get the job, a replacement is told to use the code itself."""
    old_id, _key, backup_id = await _backup(client)
    await BackupLog.update({BackupLog.filename: "b.tar.gz.age"}).where(BackupLog.id == backup_id)
    new_id, _ = await client.register_agent("new-desktop")
    mark = await client.post(f"/api/agents/{new_id}/inherit", json={"fromAgentId": old_id})
    assert mark.status_code == 201, mark.text
    url = f"/api/backups/{backup_id}/restore"
    assert '<option value="new-desktop">' not in (await client.get(f"/backups/{backup_id}")).text
    r = await client.post(url, json={"agentId": new_id, "target": "/home/me/old"})
    assert r.status_code == 409 and "--recovery-code-stdin" in r.json()["detail"], r.text
    assert await RestoreJob.count() == 0
    r = await client.post(url, json={"agentId": old_id, "target": "/home/me/old"})
    assert r.status_code == 202, r.text


async def test_a_job_made_while_the_pending_agents_are_read_reaches_the_heartbeat(
    client: ApiClient, services: Services
) -> None:
    """The server re-reads which agents have pending jobs; a job saved after that read began
    is not in what it read, yet the next heartbeat must carry it (not ~2 s later)."""
    agent_id, key, backup_id = await _backup(client)
    jobs = services.restore_jobs
    read = jobs._read_pending_agents
    made: list[str] = []

    async def job_saved_meanwhile() -> set[object]:
        before = await read()
        r = await client.post(
            f"/api/backups/{backup_id}/restore",
            json={"agentId": agent_id, "paths": [], "target": "/home/me/restored"},
        )
        assert r.status_code == 202, r.text
        made.append(r.json()["id"])
        return before

    jobs._read_pending_agents = job_saved_meanwhile  # type: ignore[method-assign]
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.status_code == 200, beat.text
    jobs._read_pending_agents = read  # type: ignore[method-assign]
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.json()["restoreRequests"] == made
