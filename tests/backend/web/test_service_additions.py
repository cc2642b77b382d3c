"""The service methods added for the web console, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

from backend.services import Services
from tests.support.api import ApiClient
from tests.support.web import Browser


async def test_signup_status(client: ApiClient, services: Services) -> None:
    assert await services.accounts.signup_status() == "first"
    await services.accounts.create_user("me@example.com", "correct horse", is_admin=True)
    assert await services.accounts.signup_status() == "closed"
    services.accounts.settings = replace(services.settings, allow_signup=True)
    assert await services.accounts.signup_status() == "open"


async def test_key_matches_only_the_agents_own_key(client: ApiClient, services: Services) -> None:
    await client.signup()
    me = await services.accounts.user_for_session(client.raw.cookies["backapp_session"])
    assert me is not None
    first, key = await client.register_agent("one")
    second, other_key = await client.register_agent("two")
    assert await services.agents.key_matches(me, first, key) is True
    assert await services.agents.key_matches(me, first, other_key) is False
    assert await services.agents.key_matches(me, second, other_key) is True
    assert await services.agents.key_matches(me, first, "") is False
    assert await services.agents.key_matches(me, first, "bka_" + "x" * 300) is False
    assert await services.agents.key_matches(me, "not-a-uuid", key) is False
    stranger = await services.accounts.create_user("x@example.com", "correct horse")
    assert await services.agents.key_matches(stranger, first, key) is False


async def test_last_backups_and_totals(client: ApiClient, services: Services) -> None:
    browser = Browser(client)
    await client.signup()
    me = await services.accounts.user_for_session(client.raw.cookies["backapp_session"])
    assert me is not None
    agent_id, key = await client.register_agent()
    docs = await client.create_config(agent_id, name="Docs")
    photos = await client.create_config(agent_id, name="Photos")
    empty = await client.create_config(agent_id, name="Empty")

    zero = await services.history.totals(me)
    assert (zero.stored_bytes, zero.completed, zero.failed, zero.running) == (0, 0, 0, 0)

    first = await browser.agent_run(key, docs["id"], b"a" * 100, "one.tar.gz")
    second = await browser.agent_run(key, docs["id"], b"b" * 50, "two.tar.gz")
    good = await browser.agent_run(key, photos["id"], b"c" * 1000, "three.tar.gz")
    failed = await client.agent_post(
        key, "/api/agent/backup/start", {"configId": photos["id"], "filename": "four.tar.gz"}
    )
    await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": failed.json()["logId"], "status": "failed", "error": "boom"},
    )
    running = await client.agent_post(
        key, "/api/agent/backup/start", {"configId": docs["id"], "filename": "five.tar.gz"}
    )

    last = await services.history.last_backups(me)
    assert set(last) == {docs["id"], photos["id"], empty["id"]}
    newest, completed = last[docs["id"]].last, last[docs["id"]].last_completed
    assert newest is not None and newest.id == running.json()["logId"]
    assert newest.status == "running"
    assert completed is not None and completed.id == second["logId"] != first["logId"]
    newest, completed = last[photos["id"]].last, last[photos["id"]].last_completed
    assert newest is not None and newest.status == "failed"
    assert completed is not None and completed.id == good["logId"]
    assert last[empty["id"]].last is None and last[empty["id"]].last_completed is None

    totals = await services.history.totals(me)
    assert (totals.stored_bytes, totals.completed, totals.failed, totals.running) == (1150, 3, 1, 1)
    stranger = await services.accounts.create_user("x@example.com", "correct horse")
    assert await services.history.last_backups(stranger) == {}
    assert (await services.history.totals(stranger)).completed == 0
