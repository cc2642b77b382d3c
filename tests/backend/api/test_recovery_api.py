"""The recovery endpoints of the agent API through the real ASGI app, on SQLite and PostgreSQL:
set-up once, wrapped keys only for the current version, rotation all at once or not at all, and
precise refusals of bad input."""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import httpx
import pyrage

from backend.recovery.tables import RecoveryKey, WrappedKey
from backend.services import Services
from tests.support.api import ApiClient

KDF = "argon2id$v=19$m=65536,t=3,p=4"


def recipient() -> str:
    return str(pyrage.x25519.Identity.generate().to_public())


def wrapped_for(public_key: str, key: bytes | None = None) -> str:
    data = pyrage.encrypt(key or os.urandom(32), [pyrage.x25519.Recipient.from_str(public_key)])
    return base64.b64encode(data).decode()


def b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def setup_body(**over: Any) -> dict[str, Any]:
    return {"publicKey": recipient(), "salt": b64(16), "kdf": KDF, "proof": b64(32), **over}


async def put(client: ApiClient, key: str, path: str, body: Any) -> httpx.Response:
    response: httpx.Response = await client.raw.put(
        path, json=body, headers={"X-Agent-API-Key": key}
    )
    return response


async def test_set_up_once_then_wrapped_keys_for_the_current_version(client: ApiClient) -> None:
    await client.signup()
    a_id, a_key = await client.register_agent("laptop")
    b_id, b_key = await client.register_agent("desktop")

    r = await client.agent_get(a_key, "/api/agent/recovery")
    assert r.status_code == 200 and r.json()["configured"] is False, r.text
    # No recovery key yet: nothing to wrap for.
    r = await put(
        client, a_key, "/api/agent/repo/key", {"wrappedKey": wrapped_for(recipient()), "version": 1}
    )
    assert r.status_code == 409 and "not set up" in r.json()["detail"]

    body = setup_body()
    r = await client.agent_post(a_key, "/api/agent/recovery", body)
    assert r.status_code == 201, r.text
    state = r.json()
    assert state["configured"] is True and state["version"] == 1
    assert state["publicKey"] == body["publicKey"] and state["salt"] == body["salt"]
    assert state["kdf"] == KDF and state["agentKeyVersion"] is None
    assert "proof" not in state and body["proof"] not in r.text
    # Only once, from any agent of the account.
    r = await client.agent_post(b_key, "/api/agent/recovery", setup_body())
    assert r.status_code == 409 and "rotate" in r.json()["detail"]

    wrapped = wrapped_for(body["publicKey"])
    r = await put(client, a_key, "/api/agent/repo/key", {"wrappedKey": wrapped, "version": 2})
    assert r.status_code == 409 and "version 1" in r.json()["detail"]
    r = await put(client, a_key, "/api/agent/repo/key", {"wrappedKey": wrapped, "version": 1})
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    again = wrapped_for(body["publicKey"])
    r = await put(client, a_key, "/api/agent/repo/key", {"wrappedKey": again, "version": 1})
    assert r.status_code == 200
    assert await WrappedKey.count() == 1

    r = await client.agent_get(a_key, "/api/agent/repo/key")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["agentId"] == a_id and got["wrappedKey"] == again and got["version"] == 1
    assert got["agentName"] == "laptop"
    r = await client.agent_get(a_key, "/api/agent/recovery")
    assert r.json()["agentKeyVersion"] == 1
    # Another agent's key, even of the same account: not for now.
    r = await client.agent_get(a_key, f"/api/agent/repo/key?agentId={b_id}")
    assert r.status_code == 404
    r = await client.agent_get(a_key, f"/api/agent/repo/key?agentId={a_id}")
    assert r.status_code == 200
    r = await client.agent_get(a_key, "/api/agent/repo/key?agentId=not-an-id")
    assert r.status_code == 400
    r = await client.agent_get(b_key, "/api/agent/repo/key")
    assert r.status_code == 404
    r = await client.agent_get(b_key, "/api/agent/recovery/keys")
    assert [k["agentId"] for k in r.json()["keys"]] == [a_id]


async def test_rotation_replaces_every_wrapped_key_or_nothing(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    a_id, a_key = await client.register_agent("laptop")
    b_id, b_key = await client.register_agent("desktop")
    first = setup_body()
    assert (await client.agent_post(a_key, "/api/agent/recovery", first)).status_code == 201
    for key in (a_key, b_key):
        r = await put(
            client,
            key,
            "/api/agent/repo/key",
            {"wrappedKey": wrapped_for(first["publicKey"]), "version": 1},
        )
        assert r.status_code == 200

    new = setup_body()
    keys = [
        {"agentId": a_id, "wrappedKey": wrapped_for(new["publicKey"])},
        {"agentId": b_id, "wrappedKey": wrapped_for(new["publicKey"])},
    ]
    good = {"oldVersion": 1, "oldProof": first["proof"], **new, "keys": keys}
    before = await RecoveryKey.select().first()

    async def rotate(body: dict[str, Any], key: str = b_key) -> httpx.Response:
        return await client.agent_post(key, "/api/agent/recovery/rotate", body)

    r = await rotate({**good, "oldVersion": 2})
    assert r.status_code == 409 and "version 1" in r.json()["detail"]
    r = await rotate({**good, "oldProof": b64(32)})
    assert r.status_code == 403 and "wrong recovery code" in r.json()["detail"]
    r = await rotate({**good, "keys": keys[:1]})
    assert r.status_code == 409 and r.json()["missing"] == [b_id]
    r = await rotate({**good, "keys": [keys[0], keys[0]]})
    assert r.status_code == 400 and "twice" in r.json()["detail"]
    r = await rotate(
        {**good, "keys": [*keys, {"agentId": str(uuid.uuid4()), "wrappedKey": b64(100)}]}
    )
    assert r.status_code == 400 and "keys[2].wrappedKey" in r.json()["detail"]
    # An agent of another account cannot be named.
    other = ApiClient(
        httpx.AsyncClient(transport=client.raw._transport, base_url="http://testserver.local")
    )
    object.__setattr__(services.settings, "allow_signup", True)
    await other.signup("mallory@example.com", "mallory-password")
    m_id, m_key = await other.register_agent("mallory's")
    r = await rotate(
        {**good, "keys": [*keys, {"agentId": m_id, "wrappedKey": keys[0]["wrappedKey"]}]}
    )
    assert r.status_code == 404
    # Nothing changed by the refusals.
    assert await RecoveryKey.select().first() == before
    assert {r["version"] for r in await WrappedKey.select(WrappedKey.version)} == {1}
    # The other account has no recovery key: it sees none, and cannot rotate ours.
    r = await other.agent_get(m_key, "/api/agent/recovery")
    assert r.json() == {
        "configured": False,
        "publicKey": None,
        "salt": None,
        "kdf": None,
        "version": None,
        "createdAt": None,
        "rotatedAt": None,
        "agentKeyVersion": None,
        "organisationKey": None,
        "organisationVersion": None,
        "agentOrganisationKeyVersion": None,
    }
    r = await rotate(good, key=m_key)
    assert r.status_code == 409 and "not set up" in r.json()["detail"]

    r = await rotate(good)
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["version"] == 2 and state["publicKey"] == new["publicKey"]
    assert state["rotatedAt"] and state["agentKeyVersion"] == 2
    stored = {
        r["agentId"]: r
        for r in (await client.agent_get(a_key, "/api/agent/recovery/keys")).json()["keys"]
    }
    assert {a: k["wrappedKey"] for a, k in stored.items()} == {
        k["agentId"]: k["wrappedKey"] for k in keys
    }
    assert {k["version"] for k in stored.values()} == {2}
    # The same request again is stale now; the old proof no longer rotates.
    r = await rotate(good)
    assert r.status_code == 409
    r = await rotate({**good, "oldVersion": 2})
    assert r.status_code == 403
    # A key wrapped for version 1 is refused now.
    r = await put(
        client,
        a_key,
        "/api/agent/repo/key",
        {"wrappedKey": wrapped_for(new["publicKey"]), "version": 1},
    )
    assert r.status_code == 409


async def test_bad_input_is_refused_precisely(client: ApiClient) -> None:
    await client.signup()
    _a_id, a_key = await client.register_agent("laptop")
    for bad in (
        setup_body(publicKey="age1short"),
        setup_body(publicKey="AGE-SECRET-KEY-1" + "Q" * 58),
        setup_body(salt="!!not base64!!!!!!!!!!"),
        setup_body(salt=b64(8)),
        setup_body(kdf="scrypt$N=1"),
        setup_body(proof=b64(16)),
        setup_body(proof="x" * 44),
        {**setup_body(), "recoveryCode": "AAAA"},
        {k: v for k, v in setup_body().items() if k != "proof"},
    ):
        r = await client.agent_post(a_key, "/api/agent/recovery", bad)
        assert r.status_code == 400, (bad, r.text)
    assert await RecoveryKey.count() == 0
    r = await client.raw.get("/api/agent/recovery")
    assert r.status_code == 401
    r = await client.raw.get("/api/agent/recovery", headers={"X-Agent-API-Key": "bka_nope"})
    assert r.status_code == 401
    body = setup_body()
    assert (await client.agent_post(a_key, "/api/agent/recovery", body)).status_code == 201
    for bad_put in (
        {"wrappedKey": "not base64!", "version": 1},
        {"wrappedKey": b64(200), "version": 1},
        {
            "wrappedKey": base64.b64encode(b"age-encryption.org/v1\n" + b"x" * 5000).decode(),
            "version": 1,
        },
        {"wrappedKey": wrapped_for(body["publicKey"]), "version": 0},
        {"wrappedKey": wrapped_for(body["publicKey"])},
    ):
        r = await put(client, a_key, "/api/agent/repo/key", bad_put)
        assert r.status_code == 400, (bad_put, r.text)
    assert await WrappedKey.count() == 0
