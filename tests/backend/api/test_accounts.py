"""Accounts through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import anyio

from backend.accounts.tables import User, UserSession
from backend.settings import Settings
from tests.support.api import ApiClient


async def test_first_signup_is_admin_and_signed_in(client: ApiClient) -> None:
    user = await client.signup("Owner@Example.com", "correct horse")
    assert user["email"] == "owner@example.com" and user["isAdmin"] is True
    me = await client.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["user"]["email"] == "owner@example.com"
    row = await User.select(User.password_hash).first()
    assert row["password_hash"].startswith("$argon2id$")
    assert "correct horse" not in row["password_hash"]


async def test_cookies_are_httponly_samesite(client: ApiClient) -> None:
    r = await client.raw.post("/api/auth/signup", json={"email": "a@b.co", "password": "password1"})
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("backapp_session="))
    csrf = next(c for c in cookies if c.startswith("csrftoken="))
    assert "HttpOnly" in session and "SameSite=lax" in session
    assert "HttpOnly" not in csrf


async def test_second_signup_closed_by_default(client: ApiClient) -> None:
    await client.signup()
    client.raw.cookies.clear()
    r = await client.raw.post("/api/auth/signup", json={"email": "x@y.co", "password": "password1"})
    assert r.status_code == 403
    assert "sign-up is closed" in r.json()["detail"]
    assert await User.count() == 1


async def test_signup_validation(client: ApiClient) -> None:
    r = await client.raw.post("/api/auth/signup", json={"email": "nope", "password": "password1"})
    assert r.status_code == 400 and r.json()["field"] == "email"
    r = await client.raw.post("/api/auth/signup", json={"email": "a@b.co", "password": "short"})
    assert r.status_code == 400 and r.json()["field"] == "password"
    r = await client.raw.post(
        "/api/auth/signup", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.raw.post("/api/auth/signup", json={"email": 5})
    assert r.status_code == 400
    assert await User.count() == 0


async def test_login_logout(client: ApiClient) -> None:
    await client.signup("a@b.co", "password1")
    client.raw.cookies.clear()
    assert (await client.get("/api/auth/me")).status_code == 401
    bad = await client.login("a@b.co", "wrong-password")
    assert bad.status_code == 401 and bad.json()["detail"] == "wrong e-mail or password"
    unknown = await client.login("nobody@b.co", "password1")
    assert unknown.status_code == 401 and unknown.json()["detail"] == bad.json()["detail"]
    ok = await client.login("A@B.co", "password1")
    assert ok.status_code == 200
    assert (await client.get("/api/auth/me")).status_code == 200
    sessions = await UserSession.count()
    out = await client.post("/api/auth/logout")
    assert out.status_code == 200
    assert await UserSession.count() == sessions - 1
    assert (await client.get("/api/auth/me")).status_code == 401


async def test_a_stolen_cookie_is_dead_after_logout(client: ApiClient) -> None:
    await client.signup("a@b.co", "password1")
    token = client.raw.cookies.get("backapp_session")
    await client.post("/api/auth/logout")
    client.raw.cookies.set("backapp_session", token)
    r = await client.raw.get("/api/auth/me")
    assert r.status_code == 401


async def test_brute_force_is_throttled(client: ApiClient) -> None:
    await client.signup("a@b.co", "password1")
    client.raw.cookies.clear()
    for _ in range(10):  # BACKAPP_LOGIN_RATE_LIMIT default
        assert (await client.login("a@b.co", "guess")).status_code == 401
    blocked = await client.login("a@b.co", "guess")
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    # Even the right password waits out the lockout: the attacker learns nothing.
    assert (await client.login("a@b.co", "password1")).status_code == 429


async def test_csrf_required_on_cookie_authenticated_unsafe_requests(client: ApiClient) -> None:
    await client.signup()
    body = {"name": "mac", "platform": "darwin"}
    no_header = await client.raw.post("/api/agent/register", json=body)
    assert no_header.status_code == 403 and "CSRF" in no_header.json()["detail"]
    wrong = await client.raw.post(
        "/api/agent/register", json=body, headers={"x-csrftoken": "forged"}
    )
    assert wrong.status_code == 403
    ok = await client.post("/api/agent/register", json=body)
    assert ok.status_code == 201
    # Reads need no token.
    assert (await client.raw.get("/api/agents")).status_code == 200


def _backapp(
    args: list[str], env: dict[str, str], stdin: bytes
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


async def test_cli_user_create(client: ApiClient, settings: Settings) -> None:
    env = {
        "DATABASE_URL": settings.database_url,
        "BACKAPP_DATA_DIR": str(settings.data_dir),
        "BACKAPP_SECRET_KEY": settings.secret_key.decode(),
        "PATH": "/usr/bin:/bin",
    }
    create = ["user", "create", "--email", "ops@example.com", "--password-stdin"]
    r = await anyio.to_thread.run_sync(_backapp, [*create, "--admin"], env, b"s3cret-pass\n")
    assert r.returncode == 0, r.stderr
    assert b"created admin user ops@example.com" in r.stdout
    ok = await client.login("ops@example.com", "s3cret-pass")
    assert ok.status_code == 200 and ok.json()["user"]["isAdmin"] is True
    again = await anyio.to_thread.run_sync(_backapp, create, env, b"s3cret-pass\n")
    assert again.returncode == 1 and b"already exists" in again.stderr
