"""The agents page says whether the account's recovery code is set up, and never shows it."""

from __future__ import annotations

import base64
import os

import pyrage

from tests.support.api import ApiClient
from tests.support.web import Browser


async def test_the_agents_page_says_whether_recovery_is_set_up(client: ApiClient) -> None:
    browser = Browser(client)
    await client.signup()
    _agent_id, key = await client.register_agent("laptop")
    page = await browser.get("/agents")
    assert page.status_code == 200
    assert "Recovery is not set up" in page.text and "backapp-agent recovery init" in page.text
    assert "If you lose every machine and this code, the backups cannot be restored" in page.text

    public = str(pyrage.x25519.Identity.generate().to_public())
    proof = base64.b64encode(os.urandom(32)).decode()
    body = {
        "publicKey": public,
        "salt": base64.b64encode(os.urandom(16)).decode(),
        "kdf": "argon2id$v=19$m=65536,t=3,p=4",
        "proof": proof,
    }
    assert (await client.agent_post(key, "/api/agent/recovery", body)).status_code == 201
    page = await browser.get("/agents")
    assert "Recovery is set up" in page.text and "(version 1, since " in page.text
    assert "Recovery is not set up" not in page.text
    for secret_ish in (public, proof, body["salt"]):
        assert secret_ish not in page.text
