"""Continuing an old machine's repository through the real ASGI app, on SQLite and PostgreSQL:
only with the owner's mark (404 otherwise) and a proof of the current recovery code (403), never
over a repository the new machine started, once per repository; the row changes owner and keeps
its objects under the old machine's prefix."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime

import pyrage

from backend.recovery.tables import WrappedKey
from backend.repos.tables import RepoObject, Repository
from tests.support.api import ApiClient

KDF = "argon2id$v=19$m=65536,t=3,p=4"


def b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def wrapped_for(public_key: str) -> str:
    data = pyrage.encrypt(os.urandom(32), [pyrage.x25519.Recipient.from_str(public_key)])
    return base64.b64encode(data).decode()


async def repository(agent_id: str, user_id: uuid.UUID, *, initialized: bool = True) -> uuid.UUID:
    repo_id = uuid.uuid4()
    await Repository.insert(
        Repository(
            id=repo_id,
            user=user_id,
            agent=uuid.UUID(agent_id),
            created_at=datetime.now(UTC),
            initialized=initialized,
            pack_count=3,
        )
    )
    return repo_id


async def test_continue_needs_the_mark_the_code_and_a_fresh_machine(client: ApiClient) -> None:
    user = uuid.UUID((await client.signup())["id"])
    a_id, a_key = await client.register_agent("old laptop")
    b_id, b_key = await client.register_agent("new laptop")
    c_id, c_key = await client.register_agent("spare laptop")
    repo_id = await repository(a_id, user)
    public = str(pyrage.x25519.Identity.generate().to_public())
    proof = b64(32)

    def body(**over: object) -> dict[str, object]:
        return {
            "fromAgentId": a_id,
            "proof": proof,
            "wrappedKey": wrapped_for(public),
            "version": 1,
            **over,
        }

    # Without the owner's mark: 404, as for an agent that does not exist.
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body())
    assert r.status_code == 404, r.text
    r = await client.agent_post(
        b_key, "/api/agent/repo/continue", body(fromAgentId=str(uuid.uuid4()))
    )
    assert r.status_code == 404, r.text
    assert (await client.agent_get(b_key, "/api/agent/inherited")).json() == {"agents": []}
    for new in (b_id, c_id):
        r = await client.post(f"/api/agents/{new}/inherit", json={"fromAgentId": a_id})
        assert r.status_code == 201, r.text

    # Marked, but the account has no recovery code yet.
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body())
    assert r.status_code == 409 and "not set up" in r.json()["detail"], r.text
    setup = {"publicKey": public, "salt": b64(16), "kdf": KDF, "proof": proof}
    r = await client.agent_post(b_key, "/api/agent/recovery", setup)
    assert r.status_code == 201, r.text

    r = await client.agent_get(b_key, "/api/agent/inherited")
    assert r.json() == {
        "agents": [{"agentId": a_id, "name": "old laptop", "snapshots": 0, "continued": False}]
    }
    # A proof that is not the current code's, a stale version, a malformed body.
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body(proof=b64(32)))
    assert r.status_code == 403 and "wrong recovery code" in r.json()["detail"], r.text
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body(version=2))
    assert r.status_code == 409 and "version 1" in r.json()["detail"], r.text
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body(wrappedKey=b64(40)))
    assert r.status_code == 400, r.text
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body(fromAgentId=b_id))
    assert r.status_code == 400, r.text

    # B has started a repository of its own (an object stored): refused, nothing changed.
    own = await repository(b_id, user, initialized=False)
    await RepoObject.insert(
        RepoObject(
            id=uuid.uuid4(),
            repository=own,
            kind="config",
            name="config",
            size=100,
            sha256="0" * 64,
            state="stored",
            created_at=datetime.now(UTC),
        )
    )
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body())
    assert r.status_code == 409 and "of its own" in r.json()["detail"], r.text
    row = await Repository.select().where(Repository.id == repo_id).first()
    assert row is not None and str(row["agent"]) == a_id and row["prefix_agent"] is None
    # An empty repository row (nothing stored) is no obstacle: it goes.
    await RepoObject.delete().where(RepoObject.repository == own)

    sent = body()
    r = await client.agent_post(b_key, "/api/agent/repo/continue", sent)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "fromAgentId": a_id,
        "fromAgentName": "old laptop",
        "snapshots": 0,
        "packCount": 3,
    }
    row = await Repository.select().where(Repository.id == repo_id).first()
    assert row is not None and str(row["agent"]) == b_id and str(row["prefix_agent"]) == a_id
    assert not await Repository.exists().where(Repository.id == own)
    mine = await WrappedKey.select().where(WrappedKey.agent == uuid.UUID(b_id)).first()
    assert mine is not None and mine["wrapped"] == sent["wrappedKey"] and mine["version"] == 1
    # The old machine (it still has the key) neither reads nor writes the continued repository.
    r = await client.agent_get(a_key, "/api/agent/repo/objects?kind=snapshot")
    assert r.status_code == 409 and "continued" in r.json()["detail"], r.text
    assert await Repository.count().where(Repository.agent == uuid.UUID(a_id)) == 0
    # The new one reads it, as its own and through the old machine's id.
    for query in ("", f"&agentId={a_id}"):
        r = await client.agent_get(b_key, f"/api/agent/repo/objects?kind=data{query}")
        assert r.status_code == 200 and r.json()["objects"] == [], r.text
    # Again: the same answer, nothing more changes.
    r = await client.agent_post(b_key, "/api/agent/repo/continue", body())
    assert r.status_code == 200, r.text
    assert await Repository.count().where(Repository.prefix_agent == uuid.UUID(a_id)) == 1
    r = await client.agent_get(b_key, "/api/agent/inherited")
    assert r.json()["agents"][0]["continued"] is True
    # Another machine that also replaces A cannot take it over in turn.
    r = await client.agent_post(c_key, "/api/agent/repo/continue", body())
    assert r.status_code == 409 and "already continues" in r.json()["detail"], r.text
    r = await client.agent_get(c_key, "/api/agent/inherited")
    assert r.json()["agents"][0] == {
        "agentId": a_id,
        "name": "old laptop",
        "snapshots": 0,
        "continued": False,
    }
