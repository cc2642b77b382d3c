"""Findings of the security review (issue 16), each pinned by a test that failed before its fix:
bounded integers and a JSON depth limit, private files, JSON-only bodies, the error bodies the
OpenAPI schema documents, keys kept out of logs, and sign-in throttling that strangers cannot turn
against the owner."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.services import Services
from backend.settings import Settings
from tests.support.api import ApiClient, local_path
from tests.support.logs import every_log_line
from tests.support.settings import migrate

BIG = [str(2**63), str(10**30), "-1"]


@pytest.fixture
async def world(client: ApiClient) -> dict[str, str]:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id)
    return {"agent_id": agent_id, "key": key, "config_id": config["id"]}


def _concrete(path: str, world: dict[str, str]) -> str:
    return (
        path.replace("{config_id}", world["config_id"])
        .replace("{agent_id}", world["agent_id"])
        .replace("{backup_id}", "00000000-0000-0000-0000-000000000000")
    )


# --- bounded integers, bounded nesting -------------------------------------------------------


async def test_every_integer_query_parameter_is_bounded(
    client: ApiClient, world: dict[str, str]
) -> None:
    """``offset=2**63`` was a 500 (the database's integer overflowed)."""
    schema = (await client.get("/schema/openapi.json")).json()
    seen = []
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            if method != "get":
                continue
            for param in op.get("parameters", []):
                if param["in"] != "query" or param["schema"].get("type") != "integer":
                    continue
                for value in BIG:
                    r = await client.get(
                        _concrete(path, world),
                        params={param["name"]: value},
                        headers={"X-Agent-API-Key": world["key"]},
                    )
                    assert r.status_code == 400, (path, param["name"], value, r.text)
                    body = r.json()
                    assert body["success"] is False and param["name"] in body["detail"], body
                seen.append((path, param["name"]))
    assert ("/api/backups", "offset") in seen and ("/api/backups", "limit") in seen
    assert ("/api/agents/{agent_id}/logs", "limit") in seen
    assert ("/api/agent/backups", "limit") in seen


async def test_web_pages_bound_their_page_numbers(client: ApiClient, world: dict[str, str]) -> None:
    for path in ["/configs/" + world["config_id"]]:
        for value in BIG:
            r = await client.get(path, params={"page": value})
            assert r.status_code == 400, (path, value, r.status_code, r.text[:300])
    # /backups pages by cursor (``after``), not by number: a forged or overlong one is a 400 too.
    for cursor in ["9" * 40, "x" * 5000]:
        r = await client.get("/backups", params={"after": cursor})
        assert r.status_code == 400, (cursor[:20], r.status_code, r.text[:300])


async def test_integers_in_bodies_are_bounded(client: ApiClient, world: dict[str, str]) -> None:
    """An integer past the database's 64 bits is a 400 naming the field, not a 500."""
    key = world["key"]
    for field in ["filesize", "size"]:
        r = await client.agent_post(
            key,
            "/api/agent/backup/start",
            {"configId": world["config_id"], "filename": "a.tar.gz", field: 2**63},
        )
        assert r.status_code == 400, (field, r.text)
        assert field in r.json()["detail"]
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": world["config_id"], "filename": "b.tar.gz", "filesize": 5},
    )
    assert start.status_code == 200, start.text
    for field in ["filesProcessed", "bytesTransferred", "duration", "size"]:
        r = await client.agent_post(
            key,
            "/api/agent/backup/complete",
            {"logId": start.json()["logId"], "status": "failed", field: 2**63},
        )
        assert r.status_code == 400, (field, r.text)
        assert field in r.json()["detail"]


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/auth/signup"])
async def test_deeply_nested_json_is_a_precise_400(client: ApiClient, path: str) -> None:
    """5,000 levels of nesting were a 500 (RecursionError), even without signing in."""
    for depth in [5000, 200]:
        body = (
            b'{"email": "a@b.co", "password": "password1", "x": '
            + b"[" * depth
            + b"]" * depth
            + b"}"
        )
        r = await client.raw.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (depth, r.text)
        assert "nested" in r.json()["detail"]
    # Strings full of brackets are text, not nesting.
    body = b'{"email": "a@b.co", "password": "' + b"[" * 1000 + b'"}'
    r = await client.raw.post(
        "/api/auth/login", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 401, r.text


async def test_deeply_nested_log_metadata_is_refused(
    client: ApiClient, world: dict[str, str]
) -> None:
    nested: Any = "x"
    for _ in range(100):
        nested = {"a": nested}
    r = await client.agent_post(
        world["key"], "/api/agent/log", {"level": "info", "message": "m", "metadata": nested}
    )
    assert r.status_code == 400 and "nested" in r.json()["detail"]
    shallow: Any = "x"
    for _ in range(10):
        shallow = {"a": shallow}
    r = await client.agent_post(
        world["key"], "/api/agent/log", {"level": "info", "message": "m", "metadata": shallow}
    )
    assert r.status_code == 201, r.text


# --- files and folders are private -----------------------------------------------------------


def _modes(root: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of everything under ``root``, ``root`` included."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    """``backapp migrate`` on a new SQLite path: the database 0600, new folders 0700."""
    folder = tmp_path / "new" / "data"
    migrate(f"sqlite:///{folder / 'backapp.sqlite3'}")
    modes = _modes(tmp_path / "new")
    assert modes["."] == "0o700" and modes["data"] == "0o700", modes
    files = {p: m for p, m in modes.items() if (tmp_path / "new" / p).is_file()}
    assert files and all(m == "0o600" for m in files.values()), files


async def test_local_storage_objects_are_private(
    client: ApiClient, world: dict[str, str], settings: Settings
) -> None:
    """A single PUT and a multipart upload: every file 0600, every folder 0700."""
    import hashlib

    key = world["key"]
    payload = b"single object"
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": world["config_id"], "filename": "one.tar.gz", "filesize": len(payload)},
    )
    put = await client.raw.put(local_path(start.json()["upload"]["url"]), content=payload)
    assert put.status_code == 200, put.text
    multi = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": world["config_id"], "filename": "two.tar.gz", "multipart": True},
    )
    log_id = multi.json()["logId"]
    part = b"part one"
    sha = hashlib.sha256(part).hexdigest()
    url = await client.agent_post(
        key,
        "/api/agent/backup/upload/part",
        {"logId": log_id, "partNumber": 1, "size": len(part), "sha256": sha},
    )
    put = await client.raw.put(local_path(url.json()["part"]["url"]), content=part)
    assert put.status_code == 200, put.text
    # Looked at while the part waits in uploads/, then after it is assembled.
    during = _modes(settings.data_dir / "storage")
    done = await client.agent_post(
        key,
        "/api/agent/backup/upload/complete",
        {"logId": log_id, "parts": [{"partNumber": 1, "etag": put.headers["etag"], "sha256": sha}]},
    )
    assert done.status_code == 200, done.text
    after = _modes(settings.data_dir / "storage")
    for modes in (during, after):
        for path, mode in modes.items():
            wanted = "0o700" if (settings.data_dir / "storage" / path).is_dir() else "0o600"
            assert mode == wanted or not (settings.data_dir / "storage" / path).exists(), (
                path,
                mode,
                modes,
            )
    assert any(p.startswith("objects/") and p.endswith("two.tar.gz") for p in after)
    assert oct(stat.S_IMODE(settings.data_dir.stat().st_mode)) == "0o700"


# --- login CSRF: JSON bodies only, nothing started by another site ----------------------------


async def test_a_text_plain_body_does_not_sign_in(client: ApiClient) -> None:
    """What a cross-site ``<form enctype=text/plain>`` sends: it signed the browser in."""
    await client.signup("mallory@example.com", "password1")
    client.raw.cookies.clear()
    body = b'{"email": "mallory@example.com", "password": "password1", "x": "="}'
    for content_type in ["text/plain", "application/x-www-form-urlencoded", None]:
        headers = {"content-type": content_type} if content_type else {}
        for path in ["/api/auth/login", "/api/auth/signup"]:
            r = await client.raw.post(path, content=body, headers=headers)
            assert r.status_code == 415, (path, content_type, r.text)
            assert r.json()["error"] == "unsupported_media_type"
            assert "backapp_session" not in r.cookies
    r = await client.raw.post(
        "/api/auth/login", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200, r.text


async def test_every_json_endpoint_wants_json(client: ApiClient, world: dict[str, str]) -> None:
    config = world["config_id"]
    for method, path, body in [
        ("POST", "/api/configs", b'{"name": "x"}'),
        ("PATCH", f"/api/configs/{config}", b'{"name": "x"}'),
        ("POST", f"/api/configs/{config}/run", b"{}"),
        ("POST", "/api/agent/register", b'{"name": "x"}'),
    ]:
        r = await client.request(method, path, content=body, headers={"content-type": "text/plain"})
        assert r.status_code == 415, (path, r.text)
    agent = {"X-Agent-API-Key": world["key"], "content-type": "text/plain"}
    r = await client.raw.post("/api/agent/heartbeat", content=b"{}", headers=agent)
    assert r.status_code == 415, r.text
    # A request with no body needs no content type (Back Up Now, a bare heartbeat, sign-out).
    assert (await client.post(f"/api/configs/{config}/run")).status_code == 202
    r = await client.raw.post("/api/agent/heartbeat", headers={"X-Agent-API-Key": world["key"]})
    assert r.status_code == 200, r.text


async def test_requests_started_by_another_site_are_refused(client: ApiClient) -> None:
    await client.signup("a@b.co", "password1")
    client.raw.cookies.clear()
    creds = {"email": "a@b.co", "password": "password1"}
    for headers in [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ]:
        r = await client.raw.post("/api/auth/login", json=creds, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert "cross-site" in r.json()["detail"]
    for headers in [
        {"sec-fetch-site": "same-origin", "origin": "http://testserver.local"},
        {"origin": "http://testserver.local"},
        {},
    ]:
        r = await client.raw.post("/api/auth/login", json=creds, headers=headers)
        assert r.status_code == 200, (headers, r.text)


# --- agent keys never reach a log line --------------------------------------------------------


async def test_agent_keys_are_in_no_log_line_at_debug(client: ApiClient) -> None:
    """In the server's process, every logger at DEBUG: a key in a header, in a query string, and
    a wrong key, through every kind of agent request."""
    await client.signup()
    _, key = await client.register_agent()
    wrong = key[:-4] + "AAAA"
    with every_log_line() as lines:
        assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 200
        r = await client.raw.get(f"/api/agent/configs?key={key}", headers={"X-Agent-API-Key": key})
        assert r.status_code == 200
        assert (await client.agent_post(wrong, "/api/agent/heartbeat", {})).status_code == 401
        r = await client.raw.post(
            f"/api/agent/heartbeat?key={key}",
            content=b"{",
            headers={"X-Agent-API-Key": key, "content-type": "application/json"},
        )
        assert r.status_code == 400
    assert any("/api/agent/configs" in line for line in lines), lines
    for secret in (key, key[4:], wrong):
        assert [line for line in lines if secret in line] == []


# --- sign-in throttling that a stranger cannot turn against the owner -------------------------

OWNER = {"email": "owner@example.com", "password": "correct horse"}


def _stranger(client: ApiClient, address: str) -> httpx.AsyncClient:
    """A browser of someone else, at ``address``, on the same app (no cookie of the owner's)."""
    app = client.raw._transport.app
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://testserver.local",
    )


async def _lock_the_account(client: ApiClient) -> None:
    """Ten wrong passwords, each from another address: the per-account limit is reached."""
    for i in range(10):
        async with _stranger(client, f"203.0.113.{i}") as http:
            r = await http.post("/api/auth/login", json={**OWNER, "password": f"guess {i}"})
            assert r.status_code == 401, r.text
    async with _stranger(client, "203.0.113.99") as http:
        r = await http.post("/api/auth/login", json=OWNER)
        assert r.status_code == 429, "an unknown browser must wait, even with the right password"


async def test_strangers_cannot_lock_the_owner_out(client: ApiClient) -> None:
    await client.raw.post("/api/auth/signup", json=OWNER)
    await client.post("/api/auth/logout")
    r = await client.raw.post("/api/auth/login", json=OWNER)  # the owner's own browser
    assert r.status_code == 200, r.text
    await client.post("/api/auth/logout")
    await _lock_the_account(client)
    # The owner's browser signed in here before: the right password still works.
    r = await client.raw.post("/api/auth/login", json=OWNER)
    assert r.status_code == 200, r.text
    assert (await client.get("/api/auth/me")).json()["user"]["email"] == OWNER["email"]


async def test_the_known_browser_cookie_is_throttled_itself_and_bound_to_its_account(
    client: ApiClient, services: Services
) -> None:
    await client.raw.post("/api/auth/signup", json=OWNER)
    device = client.raw.cookies.get("backapp_device")
    assert device, "a successful sign-up or sign-in marks the browser as known"
    set_cookie = next(
        c
        for c in (await client.raw.post("/api/auth/login", json=OWNER)).headers.get_list(
            "set-cookie"
        )
        if c.startswith("backapp_device=")
    )
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    await client.post("/api/auth/logout")
    assert client.raw.cookies.get("backapp_device"), "signing out keeps the browser known"
    # A stolen cookie does not buy unlimited guesses: wrong passwords count against it.
    for i in range(10):
        r = await client.raw.post("/api/auth/login", json={**OWNER, "password": f"guess {i}"})
        assert r.status_code == 401
    r = await client.raw.post("/api/auth/login", json=OWNER)
    assert r.status_code == 429
    # A forged or altered cookie is no cookie; one of another account does not count for this one.
    await _lock_the_account(client)
    for forged in ["abc.def", device[:-2] + "00", services.accounts.device_token(uuid.uuid4())]:
        async with _stranger(client, "198.51.100.8") as http:
            http.cookies.set("backapp_device", forged)
            r = await http.post("/api/auth/login", json=OWNER)
            assert r.status_code == 429, forged


async def test_one_address_guessing_many_accounts_is_throttled(client: ApiClient) -> None:
    await client.raw.post("/api/auth/signup", json=OWNER)
    async with _stranger(client, "192.0.2.1") as http:
        for i in range(30):
            r = await http.post(
                "/api/auth/login", json={"email": f"u{i}@x.co", "password": "guess"}
            )
            assert r.status_code == 401
        r = await http.post("/api/auth/login", json={"email": "u99@x.co", "password": "guess"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # Another address is not affected.
    async with _stranger(client, "192.0.2.2") as http:
        assert (await http.post("/api/auth/login", json=OWNER)).status_code == 200


async def test_the_web_sign_in_form_lets_the_known_browser_in(client: ApiClient) -> None:
    import re

    async def sign_in_form(http: httpx.AsyncClient, password: str) -> httpx.Response:
        form = await http.get("/signin")
        token = re.search(r'name="_csrf" value="([^"]*)"', form.text)
        assert token, form.text[:500]
        return await http.post(
            "/signin",
            data={"_csrf": token.group(1), "email": OWNER["email"], "password": password},
        )

    await client.raw.post("/api/auth/signup", json=OWNER)
    client.raw.cookies.clear()
    r = await sign_in_form(client.raw, OWNER["password"])
    assert r.status_code == 303, r.text
    assert client.raw.cookies.get("backapp_device")
    await client.post("/signout", data={"_csrf": client.raw.cookies.get("csrftoken")})
    await _lock_the_account(client)
    async with _stranger(client, "203.0.113.50") as http:
        assert (await sign_in_form(http, OWNER["password"])).status_code == 429
    r = await sign_in_form(client.raw, OWNER["password"])
    assert r.status_code == 303, r.text


# --- part URLs: a short window after an agent is revoked --------------------------------------


async def _part_url(client: ApiClient, world: dict[str, str]) -> dict[str, Any]:
    multi = await client.agent_post(
        world["key"],
        "/api/agent/backup/start",
        {"configId": world["config_id"], "filename": "parts.tar.gz", "multipart": True},
    )
    assert multi.status_code == 200, multi.text
    r = await client.agent_post(
        world["key"],
        "/api/agent/backup/upload/part",
        {"logId": multi.json()["logId"], "partNumber": 1, "size": 10, "sha256": "a" * 64},
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["part"])


def _expiry_in_url(url: str) -> int:
    from urllib.parse import parse_qs, urlsplit

    return int(parse_qs(urlsplit(url).query)["X-Backapp-Expires"][0])


async def test_part_urls_expire_after_15_minutes_by_default(
    client: ApiClient, world: dict[str, str]
) -> None:
    """Part URLs lived an hour: a revoked agent could keep uploading that long."""
    import time
    from datetime import datetime

    before = time.time()
    part = await _part_url(client, world)
    expires = _expiry_in_url(part["url"])
    assert before + 900 - 2 <= expires <= time.time() + 900 + 2, expires - before
    stated = datetime.fromisoformat(part["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert abs(stated - expires) <= 2


@pytest.mark.parametrize("seconds", [120])
async def test_the_part_url_lifetime_is_a_setting(
    tmp_path: Path, sqlite_url: str, seconds: int
) -> None:
    import time

    from backend.app import create_app
    from backend.services import Services as Built
    from tests.support.settings import make_settings

    settings = make_settings(tmp_path, sqlite_url, presign_part_seconds=seconds)
    app = create_app(settings, Built.build(settings))
    await app.state.runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as raw:
            api = ApiClient(raw)
            await api.signup()
            agent_id, key = await api.register_agent()
            config = await api.create_config(agent_id)
            before = time.time()
            part = await _part_url(api, {"key": key, "config_id": config["id"]})
            assert before + seconds - 2 <= _expiry_in_url(part["url"]) <= time.time() + seconds + 2
    finally:
        await app.state.runtime.stop()


def test_presign_part_seconds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKAPP_SECRET_KEY", "x" * 32)
    assert Settings.from_env().presign_part_seconds == 900
    monkeypatch.setenv("BACKAPP_PRESIGN_PART_SECONDS", "300")
    assert Settings.from_env().presign_part_seconds == 300
    monkeypatch.setenv("BACKAPP_PRESIGN_PART_SECONDS", "10")
    with pytest.raises(ValueError, match="BACKAPP_PRESIGN_PART_SECONDS"):
        Settings.from_env()


# --- the OpenAPI schema documents the error body the API really sends -------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = schema["components"]["schemas"][name]
    return node


PUBLIC_API = {"/api/auth/signup", "/api/agent/pair"}
"""API operations that take no credentials: signing up, and trading a pairing code for a key."""


async def test_every_documented_error_is_the_real_error_body(
    client: ApiClient, world: dict[str, str]
) -> None:
    """Every 4xx/5xx of every operation documents ``{"success": false, "status", "error",
    "detail"}``, and what an operation really answers to a bad request is among its documented
    statuses, with that body."""
    schema = (await client.get("/schema/openapi.json")).json()
    operations = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            operations += 1
            errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
            where = f"{method.upper()} {path}"
            if path.startswith("/api/") and path != "/api/health":
                assert "400" in errors, (where, sorted(op["responses"]))
                if path not in PUBLIC_API:
                    assert "401" in errors, (where, sorted(op["responses"]))
            for code, response in errors.items():
                body = _resolve(schema, response["content"]["application/json"]["schema"])
                props = body.get("properties", {})
                assert {"success", "status", "error", "detail"} <= set(props), (where, code, body)
                assert {"status", "error", "detail"} <= set(body.get("required", [])), (where, code)
                assert "status_code" not in props and "extra" not in props, (where, code)
            # What the operation answers without credentials, or with a malformed body.
            if not path.startswith("/api/") or path == "/api/health":
                continue
            concrete = _concrete(path, world)
            kwargs: dict[str, Any] = {}
            if method in {"post", "patch", "put"}:
                kwargs = {"content": b"[", "headers": {"content-type": "application/json"}}
            for r in [
                await client.raw.request(method.upper(), concrete, **kwargs),
                await client.request(
                    method.upper(),
                    concrete,
                    **{
                        **kwargs,
                        "headers": {**kwargs.get("headers", {}), "X-Agent-API-Key": world["key"]},
                    },
                ),
            ]:
                if r.status_code < 400:
                    continue
                assert str(r.status_code) in errors, (where, r.status_code, sorted(errors))
                got = r.json()
                assert got["success"] is False and got["status"] == r.status_code, got
    assert operations >= 30


# --- multipart uploads: what is stored is what the agent streamed -----------------------------

MiB = 1024 * 1024


def _crc(data: bytes) -> str:
    import base64
    import zlib

    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def _crc32_multipart(
    client: ApiClient, world: dict[str, str], chunks: list[bytes], put: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Start a CRC32-part multipart backup and upload ``chunks`` as its parts (``put`` sends one
    part to its URL); returns the log id and the part list for ``upload/complete``."""
    start = await client.agent_post(
        world["key"],
        "/api/agent/backup/start",
        {
            "configId": world["config_id"],
            "filename": f"big-{uuid.uuid4().hex[:8]}.tar.zst",
            "multipart": True,
            "partChecksum": "crc32",
        },
    )
    assert start.status_code == 200, start.text
    log_id = start.json()["logId"]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        r = await client.agent_post(
            world["key"],
            "/api/agent/backup/upload/part",
            {"logId": log_id, "partNumber": number, "size": len(chunk), "crc32": _crc(chunk)},
        )
        assert r.status_code == 200, r.text
        etag = await put(r.json()["part"], chunk)
        parts.append({"partNumber": number, "etag": etag, "crc32": _crc(chunk)})
    return log_id, parts


async def _check_object_crc32_is_verified(
    client: ApiClient, world: dict[str, str], put: Any, storage: Any
) -> None:
    from backend.backups.tables import BackupLog

    chunks = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    # An agent whose stream was not what it uploaded (here: its parts listed in another order
    # than it hashed them) claims the CRC32 of the stream it hashed.
    log_id, parts = await _crc32_multipart(client, world, chunks, put)
    claimed = _crc(chunks[1] + chunks[0] + chunks[2])
    r = await client.agent_post(
        world["key"],
        "/api/agent/backup/upload/complete",
        {"logId": log_id, "parts": parts, "objectCrc32": claimed},
    )
    assert r.status_code == 409, r.text
    assert "CRC32" in r.json()["detail"]
    row = await BackupLog.select().where(BackupLog.id == uuid.UUID(log_id)).first()
    assert row["status"] == "failed" and "CRC32" in row["error"], row
    assert await storage.head(row["s3_path"]) is None, "a corrupt object was left in storage"

    # The same upload with the CRC32 of what was really sent: assembled and completed.
    log_id, parts = await _crc32_multipart(
        client, {**world, "config_id": world["config_id"]}, chunks, put
    )
    whole = b"".join(chunks)
    r = await client.agent_post(
        world["key"],
        "/api/agent/backup/upload/complete",
        {"logId": log_id, "parts": parts, "objectCrc32": _crc(whole)},
    )
    assert r.status_code == 200 and r.json()["size"] == len(whole), r.text
    import hashlib

    done = await client.agent_post(
        world["key"],
        "/api/agent/backup/complete",
        {
            "logId": log_id,
            "status": "completed",
            "size": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest(),
        },
    )
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text


async def test_multipart_object_crc32_is_verified_on_local_storage(
    client: ApiClient, world: dict[str, str], services: Services
) -> None:
    async def put(part: dict[str, Any], chunk: bytes) -> str:
        r = await client.raw.put(local_path(part["url"]), content=chunk, headers=part["headers"])
        assert r.status_code == 200, r.text
        return str(r.headers["etag"])

    await _check_object_crc32_is_verified(client, world, put, services.storage)


@pytest.fixture
async def s3_world(
    tmp_path: Path, sqlite_url: str, s3_server: Any, s3_bucket: str
) -> AsyncIterator[tuple[ApiClient, dict[str, str], Services]]:
    from backend.app import create_app
    from backend.storage import S3Storage
    from tests.support.settings import make_settings

    settings = make_settings(tmp_path, sqlite_url, s3_bucket=s3_bucket)
    storage = S3Storage(
        bucket=s3_bucket,
        region=s3_server.region,
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    services = Services.build(settings, storage)
    app = create_app(settings, services)
    await app.state.runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as raw:
            api = ApiClient(raw)
            await api.signup()
            agent_id, key = await api.register_agent()
            config = await api.create_config(agent_id)
            yield api, {"agent_id": agent_id, "key": key, "config_id": config["id"]}, services
    finally:
        await app.state.runtime.stop()


async def test_multipart_object_crc32_is_verified_on_s3(
    s3_world: tuple[ApiClient, dict[str, str], Services],
) -> None:
    client, world, services = s3_world

    async def put(part: dict[str, Any], chunk: bytes) -> str:
        async with httpx.AsyncClient() as http:
            r = await http.put(part["url"], content=chunk, headers=part["headers"])
        assert r.status_code == 200, r.text
        return str(r.headers["etag"])

    await _check_object_crc32_is_verified(client, world, put, services.storage)
