"""Organisation recovery through the real ASGI app, on SQLite and PostgreSQL: only an
administrator sets the key (public part only), every agent learns it and stores its key wrapped for
it, a replacement drops the keys wrapped for the old one, and an administrator's agent gets
encrypted archives of other accounts (never plain ones) and, for snapshots, the repository's
organisation-wrapped key and read URLs; each access is in the owner's log; bad input changes
nothing."""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import httpx
import pyrage

from backend.backups.tables import BackupLog
from backend.recovery.tables import OrganisationKey, OrganisationWrappedKey
from backend.repos.tables import Repository
from tests.support.api import ApiClient, commit_opaque_snapshot, complete_one_backup, local_path


def recipient() -> str:
    return str(pyrage.x25519.Identity.generate().to_public())


def wrapped_for(public_key: str) -> str:
    data = pyrage.encrypt(os.urandom(32), [pyrage.x25519.Recipient.from_str(public_key)])
    return base64.b64encode(data).decode()


async def _employee(client: ApiClient, services: Any) -> ApiClient:
    object.__setattr__(services.settings, "allow_signup", True)
    other = ApiClient(
        httpx.AsyncClient(transport=client.raw._transport, base_url="http://testserver.local")
    )
    await other.signup("employee@example.com", "employee-password")
    return other


async def test_only_an_administrator_sets_the_key_and_agents_wrap_for_it(
    client: ApiClient, services: Any
) -> None:
    await client.signup()  # the first account: the administrator
    employee = await _employee(client, services)
    e_agent, e_key = await employee.register_agent("employee's laptop")

    r = await employee.get("/api/recovery/organisation")
    assert r.status_code == 200 and r.json()["configured"] is False
    key = recipient()
    r = await employee.request("PUT", "/api/recovery/organisation", json={"publicKey": key})
    assert r.status_code == 403, r.text
    code_like = "7K3Q-M0VX-7K3Q-M0VX-7K3Q-M0VX-7K3Q-M0VX-C9D2"
    for bad in (code_like, "AGE-SECRET-KEY-1" + "Q" * 58, "age1short", ""):
        r = await client.request("PUT", "/api/recovery/organisation", json={"publicKey": bad})
        assert r.status_code == 400 and r.json()["field"] == "publicKey", (bad, r.text)
    assert await OrganisationKey.count() == 0

    r = await client.request("PUT", "/api/recovery/organisation", json={"publicKey": key})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["setBy"] == "owner@example.com"
    # Every agent learns it (the employee's too), with nothing secret.
    state = (await client.agent_get(e_key, "/api/agent/recovery")).json()
    assert state["organisationKey"] == key and state["organisationVersion"] == 1
    assert state["agentOrganisationKeyVersion"] is None

    path = "/api/agent/repo/organisation-key"
    headers = {"X-Agent-API-Key": e_key}
    r = await client.raw.put(
        path, json={"wrappedKey": wrapped_for(key), "version": 2}, headers=headers
    )
    assert r.status_code == 409 and "version 1" in r.json()["detail"]
    r = await client.raw.put(
        path, json={"wrappedKey": "bm90IGFnZQ==", "version": 1}, headers=headers
    )
    assert r.status_code == 400
    r = await client.raw.put(
        path, json={"wrappedKey": wrapped_for(key), "version": 1}, headers=headers
    )
    assert r.status_code == 200, r.text
    state = (await client.agent_get(e_key, "/api/agent/recovery")).json()
    assert state["agentOrganisationKeyVersion"] == 1
    assert (await employee.get("/api/recovery/organisation")).json()["wrappedAgents"] == 1

    # The same key again changes nothing; a new one is version 2 and drops the old wraps.
    r = await client.request("PUT", "/api/recovery/organisation", json={"publicKey": key})
    assert r.json()["version"] == 1 and await OrganisationWrappedKey.count() == 1
    r = await client.request("PUT", "/api/recovery/organisation", json={"publicKey": recipient()})
    assert r.json()["version"] == 2 and await OrganisationWrappedKey.count() == 0
    state = (await client.agent_get(e_key, "/api/agent/recovery")).json()
    assert state["organisationVersion"] == 2 and state["agentOrganisationKeyVersion"] is None

    r = await employee.request("DELETE", "/api/recovery/organisation")
    assert r.status_code == 403 and await OrganisationKey.count() == 1
    r = await client.request("DELETE", "/api/recovery/organisation")
    assert r.status_code == 204 and await OrganisationKey.count() == 0
    r = await client.raw.put(
        path, json={"wrappedKey": wrapped_for(key), "version": 2}, headers=headers
    )
    assert r.status_code == 409 and "no organisation" in r.json()["detail"]
    assert e_agent


async def test_an_administrators_agent_gets_encrypted_archives_only(
    client: ApiClient, services: Any
) -> None:
    await client.signup()
    _a_agent, a_key = await client.register_agent("admin's desk")
    employee = await _employee(client, services)
    e_agent, e_key = await employee.register_agent("employee's laptop")
    config = await employee.create_config(e_agent, options={"encryption": True})
    sealed = await complete_one_backup(employee, e_key, config["id"])
    await BackupLog.update({BackupLog.filename: "backup-x.tar.gz.age"}).where(
        BackupLog.id == sealed
    )
    plain = await complete_one_backup(employee, e_key, config["id"])
    path = "/api/agent/organisation/restore"

    # No organisation key yet: nothing for anyone.
    r = await client.agent_post(a_key, path, {"backupId": sealed})
    assert r.status_code == 404
    await client.request("PUT", "/api/recovery/organisation", json={"publicKey": recipient()})
    r = await client.agent_post(a_key, path, {"backupId": sealed})
    assert r.status_code == 200, r.text
    assert r.json()["restore"]["filename"] == "backup-x.tar.gz.age"
    # A plain archive stays with its owner; an employee's agent is no administrator's.
    assert (await client.agent_post(a_key, path, {"backupId": plain})).status_code == 404
    assert (await client.agent_post(e_key, path, {"backupId": sealed})).status_code == 404
    assert (await client.agent_post(a_key, path, {"backupId": "nope"})).status_code == 404


async def _accesses(owner: ApiClient, agent_id: str) -> list[dict[str, Any]]:
    r = await owner.get(f"/api/agents/{agent_id}/logs?limit=500")
    assert r.status_code == 200, r.text
    return [
        x["metadata"]
        for x in r.json()["logs"]
        if (x["metadata"] or {}).get("event") == "organisation_access"
    ]


async def test_an_administrators_agent_gets_a_snapshots_wrapped_key_and_reads_its_repository(
    client: ApiClient, services: Any
) -> None:
    await client.signup()
    _a_agent, a_key = await client.register_agent("admin's desk")
    employee = await _employee(client, services)
    e_agent, e_key = await employee.register_agent("employee's laptop")
    _c_agent, c_key = await employee.register_agent("employee's other laptop")  # not an admin's
    config = await employee.create_config(e_agent, options={"type": "incremental"})
    snap = await commit_opaque_snapshot(employee, e_key, config["id"])
    archive = await complete_one_backup(
        employee, e_key, (await employee.create_config(e_agent))["id"]
    )
    path = "/api/agent/organisation/snapshot"
    read = {"agentId": e_agent, "objects": [{"kind": "snapshot", "name": snap}]}
    objects = f"/api/agent/organisation/repo/objects?kind=snapshot&agentId={e_agent}"

    async def refused(key: str, status: int = 404) -> None:
        r = await client.agent_post(key, path, {"backupId": snap})
        assert r.status_code == status and "wrappedKey" not in r.text, r.text
        r = await client.agent_post(key, "/api/agent/organisation/repo/read", read)
        assert r.status_code == 404 and "url" not in r.text, r.text
        r = await client.agent_get(key, objects)
        assert r.status_code == 404 and snap not in r.text, r.text

    # No organisation key yet: nothing for anyone.
    await refused(a_key)
    key = recipient()
    await client.request("PUT", "/api/recovery/organisation", json={"publicKey": key})
    # The laptop has not wrapped its key for it yet: the code could not open it.
    await refused(a_key, 409)
    wrapped = wrapped_for(key)
    r = await client.raw.put(
        "/api/agent/repo/organisation-key",
        json={"wrappedKey": wrapped, "version": 1},
        headers={"X-Agent-API-Key": e_key},
    )
    assert r.status_code == 200, r.text
    # Agents of an account that is not an administrator's, its own included: 404.
    await refused(c_key)
    await refused(e_key)
    assert await _accesses(employee, e_agent) == []

    r = await client.agent_post(a_key, path, {"backupId": snap})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "backupId": snap,
        "agentId": e_agent,
        "agentName": "employee's laptop",
        "configName": config["name"],
        "wrappedKey": wrapped,
        "version": 1,
    }
    r = await client.agent_post(a_key, "/api/agent/organisation/repo/read", read)
    assert r.status_code == 200 and [o["name"] for o in r.json()["objects"]] == [snap], r.text
    got = await client.raw.get(local_path(r.json()["objects"][0]["url"]))
    assert got.content == b"sealed snapshot root"
    r = await client.agent_get(a_key, objects)
    assert r.status_code == 200 and [o["name"] for o in r.json()["objects"]] == [snap]
    r = await client.agent_post(
        a_key, "/api/agent/organisation/repo/read", {"objects": read["objects"]}
    )
    assert r.status_code == 400 and r.json()["field"] == "agentId", r.text
    # An archive is not a snapshot (its own endpoint); an unknown id is a 404.
    for other in (archive, str(uuid.uuid4()), "nope"):
        r = await client.agent_post(a_key, path, {"backupId": other})
        assert r.status_code == 404, (other, r.text)

    # The owner sees the key handed out, with who and from which machine.
    [seen] = await _accesses(employee, e_agent)
    assert seen["administrator"] == "owner@example.com"
    assert seen["backupId"] == snap and seen["administratorAgentName"] == "admin's desk"

    # Replacing the organisation key drops the wrapped keys: the snapshot is out of reach again.
    await client.request("PUT", "/api/recovery/organisation", json={"publicKey": recipient()})
    await refused(a_key, 409)


async def test_an_administrators_archive_download_is_in_the_owners_log(
    client: ApiClient, services: Any
) -> None:
    await client.signup()
    _a_agent, a_key = await client.register_agent("admin's desk")
    employee = await _employee(client, services)
    e_agent, e_key = await employee.register_agent("employee's laptop")
    config = await employee.create_config(e_agent, options={"encryption": True})
    sealed = await complete_one_backup(employee, e_key, config["id"])
    await BackupLog.update({BackupLog.filename: "backup-x.tar.gz.age"}).where(
        BackupLog.id == sealed
    )
    await client.request("PUT", "/api/recovery/organisation", json={"publicKey": recipient()})
    assert await _accesses(employee, e_agent) == []
    r = await client.agent_post(a_key, "/api/agent/organisation/restore", {"backupId": sealed})
    assert r.status_code == 200, r.text
    [seen] = await _accesses(employee, e_agent)
    assert seen["administrator"] == "owner@example.com" and seen["backupId"] == sealed
    assert "encrypted archive" in str(seen["what"])


async def test_a_continued_repositorys_snapshot_opens_with_either_machines_wrapped_key(
    client: ApiClient, services: Any
) -> None:
    await client.signup()
    _a_agent, a_key = await client.register_agent("admin's desk")
    employee = await _employee(client, services)
    old_id, old_key = await employee.register_agent("old laptop")
    new_id, new_key = await employee.register_agent("new laptop")
    config = await employee.create_config(old_id, options={"type": "incremental"})
    snap = await commit_opaque_snapshot(employee, old_key, config["id"])
    key = recipient()
    await client.request("PUT", "/api/recovery/organisation", json={"publicKey": key})
    old_wrapped, new_wrapped = wrapped_for(key), wrapped_for(key)
    for agent_key, wrapped in ((old_key, old_wrapped), (new_key, new_wrapped)):
        r = await client.raw.put(
            "/api/agent/repo/organisation-key",
            json={"wrappedKey": wrapped, "version": 1},
            headers={"X-Agent-API-Key": agent_key},
        )
        assert r.status_code == 200, r.text
    # The new machine continues the old one's repository (as /repo/continue leaves it).
    await Repository.update(
        {Repository.agent: uuid.UUID(new_id), Repository.prefix_agent: uuid.UUID(old_id)}
    ).where(Repository.agent == uuid.UUID(old_id))
    path = "/api/agent/organisation/snapshot"
    objects = "/api/agent/organisation/repo/objects?kind=snapshot&agentId="

    r = await client.agent_post(a_key, path, {"backupId": snap})
    assert r.status_code == 200, r.text
    assert r.json()["agentId"] == new_id and r.json()["wrappedKey"] == new_wrapped
    assert (await client.agent_get(a_key, objects + new_id)).status_code == 200
    assert (await client.agent_get(a_key, objects + old_id)).status_code == 404
    [seen] = await _accesses(employee, old_id)  # the machine that made it
    assert seen["backupId"] == snap

    # The new machine's wrapped key lost: the old machine's opens the same repository.
    await OrganisationWrappedKey.delete().where(OrganisationWrappedKey.agent == uuid.UUID(new_id))
    r = await client.agent_post(a_key, path, {"backupId": snap})
    assert r.status_code == 200 and r.json()["wrappedKey"] == old_wrapped, r.text

    # The old machine deleted (its wrapped key with it): the access is in the new one's log.
    r = await client.raw.put(
        "/api/agent/repo/organisation-key",
        json={"wrappedKey": new_wrapped, "version": 1},
        headers={"X-Agent-API-Key": new_key},
    )
    assert r.status_code == 200, r.text
    assert (await employee.request("DELETE", f"/api/agents/{old_id}")).status_code == 204
    r = await client.agent_post(a_key, path, {"backupId": snap})
    assert r.status_code == 200 and r.json()["wrappedKey"] == new_wrapped, r.text
    [seen] = await _accesses(employee, new_id)
    assert seen["backupId"] == snap and seen["administrator"] == "owner@example.com"
