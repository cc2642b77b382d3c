"""The web console through the real ASGI app (SQLite and PostgreSQL): sessions, CSRF, escaping,
validation, isolation, and what the pages show."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig
from backend.services import Services
from tests.support.api import ApiClient
from tests.support.web import Browser, csrf_in

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def browser(client: ApiClient) -> Browser:
    return Browser(client)


async def _signed_in(browser: Browser) -> None:
    await browser.api.signup()


# --- sessions ---------------------------------------------------------------------------------


async def test_pages_need_a_session(browser: Browser) -> None:
    r = await browser.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    r = await browser.get("/agents?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/agents%3Fx%3D1"
    live = await browser.get("/agents", headers={"x-backapp-live": "agents"})
    assert live.status_code == 401 and live.text == ""
    r = await browser.http.post("/agents", data={"name": "x"})
    assert r.status_code == 303 and r.headers["location"] == "/signin"


async def test_first_sign_up_through_the_form_becomes_admin(browser: Browser) -> None:
    page = await browser.get("/signin")
    assert page.status_code == 200 and "Create the first account" in page.text
    r = await browser.submit(
        "/signup",
        "/signup",
        {"email": "Me@Example.com", "password": "correct horse", "password2": "correct horse"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    me = await browser.get("/api/auth/me")
    assert me.json()["user"] == {
        "id": me.json()["user"]["id"],
        "email": "me@example.com",
        "isAdmin": True,
    }
    dash = await browser.get("/")
    assert dash.status_code == 200
    assert "Welcome to BackApp: you are the administrator." in dash.text
    assert "Nothing is backed up yet" in dash.text
    assert "Welcome" not in (await browser.get("/")).text  # the message is shown once
    # Later sign-ups are closed by default.
    await browser.http.post("/signout", data={"_csrf": csrf_in(dash.text)})
    closed = await browser.get("/signup")
    assert (
        "Sign-up is closed on this server" in closed.text
        and "<form" not in closed.text.split("<main")[1]
    )


async def test_sign_up_errors_are_shown_next_to_the_fields(browser: Browser) -> None:
    r = await browser.submit(
        "/signup", "/signup", {"email": "me@example.com", "password": "short", "password2": "other"}
    )
    assert r.status_code == 400
    assert 'id="password2-error">The two passwords differ.' in r.text
    assert 'value="me@example.com"' in r.text
    r = await browser.submit(
        "/signup", "/signup", {"email": "me@example.com", "password": "short", "password2": "short"}
    )
    assert r.status_code == 400
    assert re.search(r'id="password-error">At least 8 characters', r.text)
    assert 'aria-invalid="true"' in r.text
    r = await browser.submit(
        "/signup",
        "/signup",
        {"email": "not-an-email", "password": "long enough", "password2": "long enough"},
    )
    assert r.status_code == 400 and 'id="email-error">Not a valid e-mail address' in r.text
    assert 'value="not-an-email"' in r.text


async def test_sign_in_and_out(browser: Browser, services: Services) -> None:
    await services.accounts.create_user("me@example.com", "correct horse", is_admin=True)
    wrong = await browser.submit(
        "/signin?next=/agents",
        "/signin",
        {"email": "me@example.com", "password": "nope", "next": "/agents"},
    )
    assert wrong.status_code == 401 and "Wrong e-mail or password." in wrong.text
    assert 'value="me@example.com"' in wrong.text and 'name="next" value="/agents"' in wrong.text
    ok = await browser.submit(
        "/signin",
        "/signin",
        {"email": "me@example.com", "password": "correct horse", "next": "/agents"},
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/agents"
    cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("backapp_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http in tests; https public URLs make it Secure
    assert (await browser.get("/signin")).status_code == 303  # already signed in
    page = await browser.get("/agents")
    out = await browser.http.post("/signout", data={"_csrf": csrf_in(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert (await browser.get("/agents")).status_code == 303


async def test_sign_in_never_redirects_off_site(browser: Browser, services: Services) -> None:
    await services.accounts.create_user("me@example.com", "correct horse")
    r = await browser.submit(
        "/signin",
        "/signin",
        {"email": "me@example.com", "password": "correct horse", "next": "//evil.example/x"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


# --- CSRF -------------------------------------------------------------------------------------


async def test_sign_in_form_needs_its_token(browser: Browser, services: Services) -> None:
    await services.accounts.create_user("me@example.com", "correct horse")
    creds = {"email": "me@example.com", "password": "correct horse"}
    await browser.get("/signin")  # the browser now holds a pre-session token
    missing = await browser.http.post("/signin", data=creds)
    assert missing.status_code == 403 and "expired or did not come from this site" in missing.text
    wrong = await browser.http.post("/signin", data={**creds, "_csrf": "anon.forged.0000"})
    assert wrong.status_code == 403
    # A token that matches the cookie but was not minted by this server is refused too.
    browser.http.cookies.set("csrftoken", "anon.mine.0123456789abcdef0123456789abcdef")
    forged = await browser.http.post(
        "/signin", data={**creds, "_csrf": "anon.mine.0123456789abcdef0123456789abcdef"}
    )
    assert forged.status_code == 403
    assert "backapp_session" not in browser.http.cookies


async def test_forms_without_the_session_token_change_nothing(browser: Browser) -> None:
    await _signed_in(browser)
    page = await browser.get("/agents")
    token = csrf_in(page.text)
    assert token == browser.http.cookies["csrftoken"]  # the session's token, as the JSON API uses
    missing = await browser.http.post("/agents", data={"name": "laptop"})
    assert missing.status_code == 403 and "could not be accepted" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    wrong = await browser.http.post("/agents", data={"name": "laptop", "_csrf": token[:-2] + "xx"})
    assert wrong.status_code == 403
    assert await Agent.count() == 0
    # The form field, or the header (what a script such as HTMX sends), is accepted.
    assert (
        await browser.http.post("/agents", data={"name": "a", "_csrf": token})
    ).status_code == 303
    header = await browser.http.post("/agents", data={"name": "b"}, headers={"x-csrftoken": token})
    assert header.status_code == 303
    assert await Agent.count() == 2
    row = await Agent.select(Agent.id).first()
    assert row is not None
    agent_id = str(row["id"])
    for action in ("rename", "deactivate", "activate", "delete", "assign"):
        r = await browser.http.post(f"/agents/{agent_id}/{action}", data={"name": "x"})
        assert r.status_code == 403, action
    assert await Agent.count() == 2
    r = await browser.http.post("/signout", data={})
    assert r.status_code == 403


# --- agents -----------------------------------------------------------------------------------


async def test_register_shows_the_key_once(browser: Browser) -> None:
    await _signed_in(browser)
    r = await browser.submit(
        "/agents", "/agents", {"name": "David's MacBook", "platform": "darwin"}
    )
    assert r.status_code == 303
    agent_id = r.headers["location"].rsplit("/", 1)[1]
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("backapp_new_key="))
    assert (
        "HttpOnly" in cookie
        and "SameSite=strict" in cookie
        and f"Path=/agents/{agent_id}" in cookie
    )
    assert "Max-Age" not in cookie  # a session cookie, never written to disk by the browser

    page = await browser.get(f"/agents/{agent_id}")
    key = re.search(r'<code id="api-key" class="secret">(bka_[^<]+)</code>', page.text).group(1)  # type: ignore[union-attr]
    assert "shown <strong>only this once</strong>" in page.text
    assert (
        f"backapp-agent configure --server http://testserver.local --agent-id {agent_id}"
        in page.text
    )
    assert "--api-key-stdin" in page.text
    assert any(
        c.startswith("backapp_new_key=") and "Max-Age=0" in c
        for c in page.headers.get_list("set-cookie")
    )
    again = await browser.get(f"/agents/{agent_id}")
    assert key not in again.text and 'id="api-key"' not in again.text
    assert key[:10] in again.text  # the prefix stays, to recognise the key

    hb = await browser.api.agent_post(key, "/api/agent/heartbeat", {"version": "0.1.0"})
    assert hb.status_code == 200
    # A key the browser makes up is never echoed back.
    browser.http.cookies.set("backapp_new_key", "bka_made-up", path=f"/agents/{agent_id}")
    assert "bka_made-up" not in (await browser.get(f"/agents/{agent_id}")).text


async def test_register_errors_keep_the_values(browser: Browser) -> None:
    await _signed_in(browser)
    r = await browser.submit("/agents", "/agents", {"name": "   ", "platform": "darwin"})
    assert r.status_code == 400
    assert 'id="name-error">Give the agent a name' in r.text
    assert '<option value="darwin" selected>' in r.text
    r = await browser.submit("/agents", "/agents", {"name": "x" * 201, "platform": "beos"})
    assert r.status_code == 400 and "At most 200 characters." in r.text
    assert "Choose one of the listed platforms." in r.text and 'value="' + "x" * 201 + '"' in r.text
    assert await Agent.count() == 0


async def test_user_strings_are_escaped_everywhere(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent(XSS)
    config = await browser.api.create_config(
        agent_id, name=XSS, sources=[{"path": XSS}], excludes=[XSS]
    )
    await browser.api.agent_post(
        key, "/api/agent/log", {"level": "error", "message": XSS, "metadata": {"x": XSS}}
    )
    start = await browser.agent_run(key, config["id"])
    pages = [
        "/",
        "/agents",
        f"/agents/{agent_id}",
        "/configs",
        f"/configs/{config['id']}",
        f"/configs/{config['id']}/edit",
        "/backups",
        f"/backups/{start['logId']}",
        f"/agents/{agent_id}/delete",
        f"/configs/{config['id']}/delete",
    ]
    for path in pages:
        r = await browser.get(path)
        assert r.status_code == 200, path
        assert XSS not in r.text, path
        assert ESCAPED in r.text or "&lt;script&gt;" in r.text, path
        assert "script-src 'self'" in r.headers["content-security-policy"]
    rename = await browser.submit(
        f"/agents/{agent_id}", f"/agents/{agent_id}/rename", {"name": "   "}
    )
    assert rename.status_code == 400 and XSS not in rename.text


async def test_rename_deactivate_reactivate_delete(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent("old")
    page = f"/agents/{agent_id}"
    r = await browser.submit(page, f"{page}/rename", {"name": ""})
    assert r.status_code == 400 and 'id="name-error">The name must not be blank.' in r.text
    r = await browser.submit(page, f"{page}/rename", {"name": "new name"})
    assert r.status_code == 303
    shown = await browser.get(page)
    assert "Renamed to “new name”." in shown.text and "<h1>new name</h1>" in shown.text

    assert (await browser.submit(page, f"{page}/deactivate", {})).status_code == 303
    assert (await browser.api.agent_post(key, "/api/agent/heartbeat", {})).status_code == 401
    assert "Reactivate" in (await browser.get(page)).text
    assert (await browser.submit(page, f"{page}/activate", {})).status_code == 303
    assert (await browser.api.agent_post(key, "/api/agent/heartbeat", {})).status_code == 200

    config = await browser.api.create_config(agent_id)
    confirm = await browser.get(f"{page}/delete")
    assert "Delete “new name”?" in confirm.text and "Daily" in confirm.text
    assert await Agent.count() == 1  # looking at the confirmation deletes nothing
    r = await browser.submit(f"{page}/delete", f"{page}/delete", {})
    assert r.status_code == 303 and r.headers["location"] == "/agents"
    assert "Deleted “new name”." in (await browser.get("/agents")).text
    assert await Agent.count() == 0
    assert (await browser.api.agent_post(key, "/api/agent/heartbeat", {})).status_code == 401
    assert (await browser.get(page)).status_code == 404
    gone = await browser.get(f"/configs/{config['id']}")
    assert "no agent assigned" in gone.text


async def test_assign_a_config_to_an_agent(browser: Browser) -> None:
    await _signed_in(browser)
    laptop, _ = await browser.api.register_agent("laptop")
    server_side = await browser.api.create_config(None, name="Server stuff")
    page = f"/agents/{laptop}"
    shown = await browser.get(page)
    assert "Nothing is assigned to this agent yet." in shown.text
    assert "Server stuff (now server-side)" in shown.text
    r = await browser.submit(page, f"{page}/assign", {"config_id": ""})
    assert r.status_code == 400 and "Choose a configuration to assign." in r.text
    r = await browser.submit(page, f"{page}/assign", {"config_id": server_side["id"]})
    assert r.status_code == 303
    assert "“Server stuff” now runs on “laptop”." in (await browser.get(page)).text
    config = (await browser.api.get(f"/api/configs/{server_side['id']}")).json()["config"]
    assert config["executionMode"] == "agent" and config["agentId"] == laptop
    r = await browser.submit(page, f"{page}/assign", {"config_id": str(uuid.uuid4())})
    assert r.status_code == 404


async def test_logs_filtered_newest_first_and_paginated(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent()
    for i in range(30):
        level = "error" if i % 10 == 0 else "info"
        r = await browser.api.agent_post(
            key, "/api/agent/log", {"level": level, "message": f"line {i:02d}"}
        )
        assert r.status_code == 201
    page = await browser.get(f"/agents/{agent_id}")
    lines = re.findall(r"line (\d\d)", page.text)
    assert lines == [f"{i:02d}" for i in range(29, 4, -1)]  # 25 newest, newest first
    older = re.search(r'href="(/agents/[^"]+after=[^"#]+)#logs" rel="next"', page.text)
    assert older, "no link to older entries"
    second = await browser.get(older.group(1).replace("&amp;", "&"))
    assert re.findall(r"line (\d\d)", second.text) == ["04", "03", "02", "01", "00"]
    assert "← Newest" in second.text and 'rel="next"' not in second.text
    errors = await browser.get(f"/agents/{agent_id}?level=error")
    assert re.findall(r"line (\d\d)", errors.text) == ["20", "10", "00"]
    assert '<option value="error" selected>' in errors.text
    none = await browser.get(f"/agents/{agent_id}?level=debug")
    assert "No log entries at level debug." in none.text
    junk = await browser.get(f"/agents/{agent_id}?level=<b>&before=junk")
    assert junk.status_code == 200 and len(re.findall(r"line (\d\d)", junk.text)) == 25


async def test_log_details_are_shown_in_words(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent()
    config = await browser.api.create_config(agent_id, name="Photos")
    metadata = {
        "configId": config["id"],
        "errors": [{"path": "/home/ada/locked.db", "message": "permission denied"}],
        "bytesTransferred": 3 * 1024 * 1024,
    }
    r = await browser.api.agent_post(
        key, "/api/agent/log", {"level": "warning", "message": "odd", "metadata": metadata}
    )
    assert r.status_code == 201
    page = await browser.get(f"/agents/{agent_id}")
    assert f'<a href="/configs/{config["id"]}">Photos</a>' in page.text
    assert "<code>/home/ada/locked.db: permission denied</code>" in page.text
    assert "3.0 MiB" in page.text
    assert "configId" not in page.text and "3145728" not in page.text


# --- configurations ---------------------------------------------------------------------------


async def test_config_form_offers_a_page_of_agents_and_a_search(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet's agents are not all listed in the form: a page of them, the chosen one, and a
    search field; an agent found by the search (off the first page) can be chosen."""
    from backend.web import _config_pages

    monkeypatch.setattr(_config_pages, "AGENT_CHOICES", 3)
    await _signed_in(browser)
    ids = [(await browser.api.register_agent(f"machine-{i}"))[0] for i in range(5)]
    form = (await browser.get("/configs/new")).text
    assert form.count('<option value="' + ids[0]) == 1
    assert ids[3] not in form and ids[4] not in form
    assert 'id="agent_q"' in form and 'form="agent-search"' in form
    found = (await browser.get("/configs/new", params={"agent_q": "machine-4"})).text
    assert ids[4] in found and ids[0] not in found
    fields = {
        "name": "Docs",
        "execution_mode": "agent",
        "agent_id": ids[4],
        "sources": "/home/d/Documents",
        "type": "full",
        "compression": "on",
        "compression_format": "gzip",
        "retention_days": "14",
    }
    r = await browser.submit("/configs/new?agent_q=machine-4", "/configs/new", fields)
    assert r.status_code == 303, r.text[:2000]
    config = (await BackupConfig.select(BackupConfig.id, BackupConfig.agent).first()) or {}
    assert str(config["agent"]) == ids[4]
    edit = (await browser.get(f"/configs/{config['id']}/edit")).text
    assert f'<option value="{ids[4]}" selected>' in edit  # the chosen one, off the first page
    few = (await browser.get("/configs/new", params={"agent_q": "nobody"})).text
    assert "No agents yet" not in few


async def test_config_form_shows_errors_and_keeps_what_was_typed(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, _ = await browser.api.register_agent("laptop")
    form = await browser.get("/configs/new")
    assert "Execution Mode" in form.text and "Select Agent" in form.text
    assert "Source paths are relative to the agent's machine." in form.text
    assert 'value="server"' in form.text and 'value="agent" checked' in form.text
    fields = {
        "name": "Docs <b>",
        "execution_mode": "agent",
        "agent_id": "",
        "sources": "   ",
        "excludes": "*.tmp\nnode_modules",
        "type": "full",
        "compression": "on",
        "compression_format": "zstd",
        "retention_days": "forever",
    }
    r = await browser.submit("/configs/new", "/configs/new", fields)
    assert r.status_code == 400
    assert 'id="agent_id-error">Select the agent that runs this backup.' in r.text
    assert 'id="sources-error">Add at least one folder' in r.text
    assert 'id="retention_days-error">A whole number of days' in r.text
    assert 'value="Docs &lt;b&gt;"' in r.text
    assert "*.tmp\nnode_modules</textarea>" in r.text
    assert '<option value="zstd" selected>' in r.text and 'value="forever"' in r.text
    # unchecked stays unchecked
    assert 'name="encryption" value="on" aria-describedby="encryption-hint">' in r.text
    assert 'role="alert"' in r.text  # the summary at the top links to each field
    assert await BackupConfig.count() == 0

    fields.update(
        agent_id=agent_id, sources="/Users/d/Documents\n/Users/d/Pictures", retention_days="14"
    )
    r = await browser.submit("/configs/new", "/configs/new", fields)
    assert r.status_code == 303
    config_id = r.headers["location"].rsplit("/", 1)[1]
    config = (await browser.api.get(f"/api/configs/{config_id}")).json()["config"]
    assert config["name"] == "Docs <b>" and config["agentId"] == agent_id
    assert config["sources"] == [{"path": "/Users/d/Documents"}, {"path": "/Users/d/Pictures"}]
    assert config["excludes"] == ["*.tmp", "node_modules"]
    assert config["options"] == {
        "type": "full",
        "compression": True,
        "encryption": False,
        "retentionDays": 14,
        "retention": None,
        "compressionFormat": "zstd",
        "excludeNodeModules": False,
        "schedule": None,
        "retry": {"attempts": 3, "delaySeconds": 60},
        "alertGraceMinutes": 60,
        "drill": None,
    }
    page = await browser.get(f"/configs/{config_id}")
    assert "Created “Docs &lt;b&gt;”." in page.text and "No backup yet" in page.text


async def test_edit_and_delete_a_config(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, _ = await browser.api.register_agent("laptop")
    config = await browser.api.create_config(agent_id, name="Docs", excludes=["*.tmp"])
    edit = f"/configs/{config['id']}/edit"
    form = await browser.get(edit)
    assert 'value="Docs"' in form.text and f'<option value="{agent_id}" selected>' in form.text
    assert config["destination"]["prefix"] in form.text
    # Local storage is named in words, not as a bucket "local" in region "local".
    assert "this server's own storage" in form.text and "local (local)" not in form.text
    page = await browser.get(f"/configs/{config['id']}")
    assert "this server's own storage" in page.text and "(local)" not in page.text
    fields = {
        "name": "",
        "execution_mode": "server",
        "agent_id": agent_id,
        "sources": "/srv/data",
        "excludes": "",
        "type": "full",
        "compression_format": "gzip",
        "retention_days": "30",
    }
    r = await browser.submit(edit, edit, fields)
    assert r.status_code == 400 and 'id="name-error">Give the configuration a name.' in r.text
    assert "/srv/data</textarea>" in r.text and 'value="server" checked' in r.text
    fields["name"] = "Server data"
    r = await browser.submit(edit, edit, fields)
    assert r.status_code == 303
    saved = (await browser.api.get(f"/api/configs/{config['id']}")).json()["config"]
    assert saved["name"] == "Server data" and saved["executionMode"] == "server"
    assert (
        saved["agentId"] is None
        and saved["excludes"] == []
        and saved["options"]["compression"] is False
    )

    delete = f"/configs/{config['id']}/delete"
    assert "Delete “Server data”?" in (await browser.get(delete)).text
    r = await browser.submit(delete, delete, {})
    assert r.status_code == 303 and r.headers["location"] == "/configs"
    assert await BackupConfig.count() == 0


# --- backups and the dashboard ----------------------------------------------------------------


async def test_a_backup_shows_everywhere(browser: Browser, services: Services) -> None:
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent("laptop")
    config = await browser.api.create_config(agent_id, name="Docs")
    dash = await browser.get("/")
    assert (
        "Some backups need attention" in dash.text
        and "“Docs” has no completed backup yet" in dash.text
    )

    start = await browser.agent_run(key, config["id"], b"x" * 2048)
    dash = await browser.get("/")
    assert "All backups are up to date" in dash.text
    assert "2.0 KiB" in dash.text and "1.5 s" in dash.text
    assert 'data-status="online"' in dash.text and 'data-state="ok"' in dash.text

    listing = await browser.get("/backups")
    assert 'data-status="completed"' in listing.text
    assert ">3</td>" in listing.text  # files
    # Where it is stored (a long, opaque key) is on the backup's own page, not a history column.
    assert start["upload"]["s3Path"] not in listing.text
    detail = await browser.get(f"/backups/{start['logId']}")
    assert start["upload"]["s3Path"] in detail.text
    assert "permission denied" in detail.text and "/home/me/locked.db" in detail.text
    assert f'href="/backups/{start["logId"]}/download"' in detail.text
    download = await browser.get(f"/backups/{start['logId']}/download")
    assert download.status_code == 303
    got = await browser.http.get(
        download.headers["location"].replace("http://testserver.local", "")
    )
    assert got.status_code == 200 and got.content == b"x" * 2048

    filtered = await browser.get(f"/backups?status=failed&agent={agent_id}")
    assert "No backups match these filters." in filtered.text
    by_config = await browser.get(f"/configs/{config['id']}")
    assert f'data-backup-id="{start["logId"]}"' in by_config.text and "1 backup" in by_config.text


async def test_a_backup_that_never_started_says_why_in_words(browser: Browser) -> None:
    """A missing source folder: the reason as the agent words it, no per-file errors "while the rest
    went on", and no storage path for an object that was never uploaded."""
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent("laptop")
    config = await browser.api.create_config(agent_id, name="Docs")
    start = await browser.api.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config["id"], "filename": "a.tar.gz", "filesize": 0},
    )
    log_id = start.json()["logId"]
    done = await browser.api.agent_post(
        key,
        "/api/agent/backup/complete",
        {
            "logId": log_id,
            "status": "failed",
            "filesProcessed": 0,
            "bytesTransferred": 0,
            "errors": [],
            "error": "Source folder not found: /home/ada/Projects",
        },
    )
    assert done.status_code == 200, done.text
    detail = await browser.get(f"/backups/{log_id}")
    assert "Why it failed" in detail.text
    assert "Source folder not found: /home/ada/Projects" in detail.text
    assert "the rest of the backup went on" not in detail.text
    assert start.json()["upload"]["s3Path"] not in detail.text and "Stored at" not in detail.text
    assert "Started by" in detail.text and ">hand" not in detail.text


async def test_failing_and_running_backups_on_the_dashboard(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, key = await browser.api.register_agent("laptop")
    config = await browser.api.create_config(agent_id, name="Docs")
    await browser.api.agent_post(key, "/api/agent/heartbeat", {})
    start = await browser.api.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config["id"], "filename": "a.tar.gz", "filesize": 4096},
    )
    dash = await browser.get("/")
    assert "Running now" in dash.text and 'data-status="running"' in dash.text
    live = await browser.get("/backups", headers={"x-backapp-live": "backups"})
    assert (
        live.status_code == 200
        and "<html" not in live.text
        and 'data-status="running"' in live.text
    )
    await browser.api.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start.json()["logId"], "status": "failed", "error": "disk <full>"},
    )
    dash = await browser.get("/")
    assert "Some backups are failing" in dash.text
    assert "the last backup failed just now: disk &lt;full&gt;" in dash.text
    # The failure is the config's: the agent that reported it is still online, not "error".
    assert 'data-status="online"' in dash.text and 'data-status="error"' not in dash.text


async def test_live_regions_answer_with_the_region_only(browser: Browser) -> None:
    await _signed_in(browser)
    agent_id, _ = await browser.api.register_agent("laptop")
    for path, region in [
        ("/", "overview"),
        ("/agents", "agents"),
        (f"/agents/{agent_id}", "status"),
        (f"/agents/{agent_id}", "logs"),
        ("/configs", "configs"),
        ("/backups", "backups"),
    ]:
        r = await browser.get(path, headers={"x-backapp-live": region})
        assert r.status_code == 200, (path, region)
        assert "<html" not in r.text and "<header" not in r.text, (path, region)
        assert "X-Backapp-Live" in r.headers["vary"] and r.headers["cache-control"] == "no-store"
    whole = await browser.get("/agents", headers={"x-backapp-live": "no-such-region"})
    assert "<html" in whole.text


async def test_pages_are_served_with_their_assets(browser: Browser) -> None:
    await _signed_in(browser)
    page = await browser.get("/")
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text):
        r = await browser.get(asset)
        assert r.status_code == 200, asset
        assert "max-age=86400" in r.headers["cache-control"]
    assert page.headers["x-frame-options"] == "DENY"
    assert '<meta name="viewport"' in page.text and 'href="#main"' in page.text


# --- isolation --------------------------------------------------------------------------------


async def test_another_users_things_answer_404(client: ApiClient, services: Services) -> None:
    owner = Browser(client)
    await owner.api.signup()
    agent_id, key = await owner.api.register_agent("owner's laptop")
    config = await owner.api.create_config(agent_id)
    start = await owner.agent_run(key, config["id"])

    await services.accounts.create_user("other@example.com", "correct horse")
    transport = client.raw._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as raw:
        other = Browser(ApiClient(raw))
        assert (await other.api.login("other@example.com", "correct horse")).status_code == 200
        for path in [
            f"/agents/{agent_id}",
            f"/agents/{agent_id}/delete",
            f"/configs/{config['id']}",
            f"/configs/{config['id']}/edit",
            f"/configs/{config['id']}/delete",
            f"/backups/{start['logId']}",
            f"/backups/{start['logId']}/download",
            "/agents/not-a-uuid",
        ]:
            r = await other.get(path)
            assert r.status_code == 404, path
            assert "owner" not in r.text and r.headers["content-type"].startswith("text/html")
        token = raw.cookies["csrftoken"]
        for action, fields in [("rename", {"name": "mine"}), ("deactivate", {}), ("delete", {})]:
            r = await raw.post(f"/agents/{agent_id}/{action}", data={"_csrf": token, **fields})
            assert r.status_code == 404, action
        own_agent, _ = await other.api.register_agent("mine")
        r = await raw.post(
            f"/agents/{own_agent}/assign", data={"_csrf": token, "config_id": config["id"]}
        )
        assert r.status_code == 404
        r = await raw.post(f"/configs/{config['id']}/edit", data={"_csrf": token, "name": "x"})
        assert r.status_code == 404
        listing = await other.get("/backups")
        assert (
            start["upload"]["s3Path"] not in listing.text
            and "owner" not in (await other.get("/")).text
        )
    row = (
        await Agent.select(Agent.name, Agent.active).where(Agent.id == uuid.UUID(agent_id)).first()
    )
    assert row == {"name": "owner's laptop", "active": True}


async def test_behind_https_every_cookie_is_secure(tmp_path, sqlite_url: str) -> None:
    from backend.app import create_app
    from backend.storage import LocalStorage
    from tests.support.settings import make_settings

    settings = make_settings(tmp_path, sqlite_url, public_url="https://backup.example.org")
    storage = LocalStorage(
        root=settings.data_dir / "storage", base_url=settings.base_url, secret=settings.secret_key
    )
    app = create_app(settings, Services.build(settings, storage))
    await app.state.runtime.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="https://backup.example.org"
        ) as raw:
            browser = Browser(ApiClient(raw))
            signin = await browser.get("/signup")
            assert all("Secure" in c for c in signin.headers.get_list("set-cookie"))
            r = await browser.submit(
                "/signup",
                "/signup",
                {
                    "email": "me@example.com",
                    "password": "correct horse",
                    "password2": "correct horse",
                },
            )
            assert r.status_code == 303
            cookies = r.headers.get_list("set-cookie")
            # session, csrf, flash, and the known-browser mark that lets its owner past a lockout
            assert len(cookies) == 4 and all("Secure" in c for c in cookies)
            assert any(c.startswith("backapp_device=") for c in cookies)
            r = await browser.submit("/agents", "/agents", {"name": "laptop", "platform": ""})
            assert all("Secure" in c for c in r.headers.get_list("set-cookie"))
            agent_id = r.headers["location"].rsplit("/", 1)[1]
            page = await browser.get(f"/agents/{agent_id}")
            assert (
                f"backapp-agent configure --server https://backup.example.org --agent-id {agent_id}"
                in page.text
            )
    finally:
        await app.state.runtime.stop()
