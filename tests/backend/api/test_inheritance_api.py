"""Inheriting an agent (a new machine replaces an old one) through the real ASGI app, on SQLite and
PostgreSQL: the owner's mark and its refusals, and what the mark lets the new agent read through
the agent API (and that, without it, every one of those requests is a 404)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx

from backend.agents.tables import AgentInheritance
from backend.services.inheritance import readable_agent_ids
from tests.support.api import ApiClient, commit_opaque_snapshot, complete_one_backup, local_path


async def _second_user(client: ApiClient, services: Any) -> ApiClient:
    object.__setattr__(services.settings, "allow_signup", True)
    other = ApiClient(
        httpx.AsyncClient(transport=client.raw._transport, base_url="http://testserver.local")
    )
    await other.signup("mallory@example.com", "mallory-password")
    return other


async def _mark(client: ApiClient, new: str, old: str) -> httpx.Response:
    return await client.post(f"/api/agents/{new}/inherit", json={"fromAgentId": old})


async def test_mark_is_idempotent_listed_and_undone(client: ApiClient) -> None:
    await client.signup()
    old, _ = await client.register_agent("old laptop")
    new, _ = await client.register_agent("new laptop")
    r = await _mark(client, new, old)
    assert r.status_code == 201, r.text
    mark = r.json()["inheritance"]
    assert (mark["agentId"], mark["fromAgentId"]) == (new, old)
    assert (mark["agentName"], mark["fromAgentName"]) == ("new laptop", "old laptop")
    assert mark["createdAt"] and mark["createdBy"]
    again = await _mark(client, new, old)
    assert again.status_code == 200 and again.json()["inheritance"] == mark
    assert await AgentInheritance.count() == 1
    listed = (await client.get(f"/api/agents/{new}/inherit")).json()
    assert [m["fromAgentId"] for m in listed["inherits"]] == [old] and listed["inheritedBy"] == []
    seen_from_old = (await client.get(f"/api/agents/{old}/inherit")).json()
    assert [m["agentId"] for m in seen_from_old["inheritedBy"]] == [new]
    r = await client.delete(f"/api/agents/{new}/inherit/{old}")
    assert r.status_code == 204
    assert (await client.get(f"/api/agents/{new}/inherit")).json()["inherits"] == []
    # Undoing twice is not an error: the state asked for is reached.
    assert (await client.delete(f"/api/agents/{new}/inherit/{old}")).status_code == 204


async def test_mark_refuses_self_cycles_unknown_deleted_and_foreign_agents(
    client: ApiClient, services: Any
) -> None:
    await client.signup()
    a, _ = await client.register_agent("a")
    b, _ = await client.register_agent("b")
    c, _ = await client.register_agent("c")
    gone, _ = await client.register_agent("gone")
    assert (await client.delete(f"/api/agents/{gone}")).status_code == 204

    r = await _mark(client, a, a)
    assert r.status_code == 400 and "itself" in r.json()["detail"]
    assert (await _mark(client, b, a)).status_code == 201
    assert (await _mark(client, c, b)).status_code == 201
    r = await _mark(client, a, c)  # c replaces b replaces a: a cannot also replace c
    assert r.status_code == 409 and "replaces" in r.json()["detail"], r.text
    r = await _mark(client, a, b)
    assert r.status_code == 409
    r = await _mark(client, a, gone)
    assert r.status_code == 404 and "deleted" in r.json()["detail"]
    r = await _mark(client, a, str(uuid.uuid4()))
    assert r.status_code == 404
    assert (await _mark(client, str(uuid.uuid4()), a)).status_code == 404
    assert (await _mark(client, "not-an-id", a)).status_code == 404
    assert (await _mark(client, a, "not-an-id")).status_code == 404

    mallory = await _second_user(client, services)
    m1, _ = await mallory.register_agent("mallory's")
    # Neither side may name an agent of another user, and the answer does not say it exists.
    assert (await _mark(mallory, m1, a)).status_code == 404
    assert (await _mark(client, a, m1)).status_code == 404
    assert (await mallory.get(f"/api/agents/{a}/inherit")).status_code == 404
    assert (await mallory.delete(f"/api/agents/{b}/inherit/{a}")).status_code == 404
    assert (await client.get(f"/api/agents/{b}/inherit")).json()["inherits"][0]["fromAgentId"] == a
    assert await AgentInheritance.count() == 2  # nothing changed by the refusals


async def test_mark_needs_the_session_and_its_csrf_token(client: ApiClient) -> None:
    await client.signup()
    old, _ = await client.register_agent("old")
    new, _ = await client.register_agent("new")
    body = {"fromAgentId": old}
    r = await client.raw.post(f"/api/agents/{new}/inherit", json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = await client.raw.post(
        f"/api/agents/{new}/inherit", json=body, headers={"x-csrftoken": "forged"}
    )
    assert r.status_code == 403
    r = await client.raw.delete(f"/api/agents/{new}/inherit/{old}")
    assert r.status_code == 403
    anonymous = httpx.AsyncClient(
        transport=client.raw._transport, base_url="http://testserver.local"
    )
    r = await anonymous.post(f"/api/agents/{new}/inherit", json=body)
    assert r.status_code == 401
    assert await AgentInheritance.count() == 0


async def test_deleting_either_agent_ends_the_mark(client: ApiClient) -> None:
    await client.signup()
    old, _ = await client.register_agent("old")
    new, _ = await client.register_agent("new")
    newer, _ = await client.register_agent("newer")
    assert (await _mark(client, new, old)).status_code == 201
    assert (await _mark(client, newer, new)).status_code == 201
    user_id = (await client.get("/api/auth/me")).json()["user"]["id"]
    ids = await readable_agent_ids(uuid.UUID(user_id), uuid.UUID(newer))
    assert ids == {uuid.UUID(newer), uuid.UUID(new), uuid.UUID(old)}  # a chain is followed
    assert (await client.delete(f"/api/agents/{old}")).status_code == 204
    ids = await readable_agent_ids(uuid.UUID(user_id), uuid.UUID(newer))
    assert ids == {uuid.UUID(newer), uuid.UUID(new)}
    assert await AgentInheritance.count() == 1


async def test_agent_api_answers_404_without_the_mark_and_reads_with_it(client: ApiClient) -> None:
    await client.signup()
    old, old_key = await client.register_agent("old laptop")
    new, new_key = await client.register_agent("new laptop")
    full = await client.create_config(old, name="Full")
    inc = await client.create_config(old, name="Inc", options={"type": "incremental"})
    archive = await complete_one_backup(client, old_key, full["id"])
    snap = await commit_opaque_snapshot(client, old_key, inc["id"])
    pack = hashlib.sha256(b"sealed pack bytes").hexdigest()
    read_body = {"agentId": old, "objects": [{"kind": "snapshot", "name": snap}]}

    async def attempts() -> list[httpx.Response]:
        return [
            await client.agent_get(new_key, f"/api/agent/backups?agentId={old}"),
            await client.agent_get(new_key, f"/api/agent/backups/{archive}"),
            await client.agent_get(new_key, f"/api/agent/backups/{snap}"),
            await client.agent_post(new_key, "/api/agent/restore", {"backupId": archive}),
            await client.agent_post(new_key, "/api/agent/restore", {"backupId": snap}),
            await client.agent_post(new_key, "/api/agent/repo/read", read_body),
            await client.agent_get(new_key, f"/api/agent/repo/objects?kind=data&agentId={old}"),
        ]

    for r in await attempts():
        assert r.status_code == 404, (r.request.url, r.text)
        assert old not in r.text and archive not in r.text
    # An id that names nothing answers the same as one without the mark.
    r = await client.agent_get(new_key, f"/api/agent/backups?agentId={uuid.uuid4()}")
    assert r.status_code == 404
    # The plain listing is unchanged: the old machine's backups are not the new one's.
    assert (await client.agent_get(new_key, "/api/agent/backups")).json()["backups"] == []

    assert (await _mark(client, new, old)).status_code == 201
    listed = await client.agent_get(new_key, f"/api/agent/backups?agentId={old}")
    assert listed.status_code == 200, listed.text
    rows = {b["id"]: b for b in listed.json()["backups"]}
    assert set(rows) == {archive, snap}
    assert rows[archive]["type"] == "full" and rows[snap]["type"] == "incremental"
    assert {b["agentId"] for b in rows.values()} == {old}
    only_full = await client.agent_get(
        new_key, f"/api/agent/backups?agentId={old}&configId={full['id']}"
    )
    assert [b["id"] for b in only_full.json()["backups"]] == [archive]
    one = await client.agent_get(new_key, f"/api/agent/backups/{snap}")
    assert one.status_code == 200 and one.json()["backup"]["agentId"] == old
    # Still not in the plain listing: that stays "the configs assigned to this agent".
    assert (await client.agent_get(new_key, "/api/agent/backups")).json()["backups"] == []

    r = await client.agent_post(new_key, "/api/agent/restore", {"backupId": archive})
    assert r.status_code == 200, r.text
    ticket = r.json()["restore"]
    assert f"/agents/{old}/" in ticket["s3Path"]
    got = await client.raw.get(local_path(ticket["url"]))
    assert got.status_code == 200 and got.content == b"abc"
    r = await client.agent_post(new_key, "/api/agent/restore", {"backupId": snap})
    assert r.status_code == 409 and old in r.json()["detail"]

    r = await client.agent_post(
        new_key,
        "/api/agent/repo/read",
        {
            "agentId": old,
            "objects": [{"kind": "snapshot", "name": snap}, {"kind": "data", "name": pack}],
        },
    )
    assert r.status_code == 200, r.text
    urls = {o["name"]: o["url"] for o in r.json()["objects"]}
    assert set(urls) == {snap, pack} and r.json()["missing"] == []
    assert all(f"/agents/{old}/repo/" in u for u in urls.values())
    got = await client.raw.get(local_path(urls[snap]))
    assert got.status_code == 200 and got.content == b"sealed snapshot root"
    r = await client.agent_get(new_key, f"/api/agent/repo/objects?kind=data&agentId={old}")
    assert r.status_code == 200 and [o["name"] for o in r.json()["objects"]] == [pack]
    # The new agent's own repository is untouched by reading the old one's (it has none).
    r = await client.agent_get(new_key, "/api/agent/repo/objects?kind=data")
    assert r.status_code == 200 and r.json()["objects"] == []
    # The old agent cannot read the new one's: a mark goes one way.
    r = await client.agent_get(old_key, f"/api/agent/backups?agentId={new}")
    assert r.status_code == 404

    # Undoing the mark closes every door again.
    assert (await client.delete(f"/api/agents/{new}/inherit/{old}")).status_code == 204
    for r in await attempts():
        assert r.status_code == 404, (r.request.url, r.text)


async def test_inherited_agent_without_a_repository_is_a_clear_404(client: ApiClient) -> None:
    await client.signup()
    old, _ = await client.register_agent("old")
    new, new_key = await client.register_agent("new")
    assert (await _mark(client, new, old)).status_code == 201
    r = await client.agent_get(new_key, f"/api/agent/repo/objects?kind=index&agentId={old}")
    assert r.status_code == 404 and "no snapshot repository" in r.json()["detail"]
    r = await client.agent_get(new_key, f"/api/agent/backups?agentId={old}")
    assert r.status_code == 200 and r.json()["backups"] == []


async def test_the_wrapped_key_of_an_inherited_agent_is_readable_only_with_the_mark(
    client: ApiClient,
) -> None:
    await client.signup()
    old, _ = await client.register_agent("old")
    new, new_key = await client.register_agent("new")
    r = await client.agent_get(new_key, f"/api/agent/repo/key?agentId={old}")
    assert r.status_code == 404 and "for that agent" in r.json()["detail"]
    assert (await _mark(client, new, old)).status_code == 201
    # Past the permission check: the old agent simply has no wrapped key stored yet.
    r = await client.agent_get(new_key, f"/api/agent/repo/key?agentId={old}")
    assert r.status_code == 404 and "stored" in r.json()["detail"], r.text
