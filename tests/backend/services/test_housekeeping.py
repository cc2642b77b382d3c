"""The housekeeping task: old throttle rows, expired sessions, long-lapsed leases and stale Back Up
Now requests go; everything still in use stays. Real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from backend.accounts.tables import LoginThrottle, User, UserSession
from backend.backups.tables import Lease, RunRequest
from backend.services import Services
from backend.services.clock import utcnow
from tests.support.api import ApiClient


async def test_housekeeping_sweeps_only_what_is_over(client: ApiClient, services: Services) -> None:
    await services.tasks.started()  # the start-up round must not race the rows made below
    await client.signup()
    agent_id, _ = await client.register_agent("laptop", "linux")
    config = await client.create_config(agent_id)
    user = await User.select(User.id).first()
    assert user is not None
    now = utcnow()
    window = timedelta(seconds=services.settings.login_lockout_seconds)

    await LoginThrottle.insert(
        LoginThrottle(id=uuid.uuid4(), key="ip:old", failures=3, window_started=now - 2 * window),
        LoginThrottle(id=uuid.uuid4(), key="ip:new", failures=3, window_started=now),
    )
    await UserSession.insert(
        UserSession(
            id=uuid.uuid4(),
            token_hash="a" * 64,
            user=user["id"],
            csrf_token="x" * 32,
            created_at=now - timedelta(days=40),
            expires_at=now - timedelta(seconds=1),
        )
    )
    live_sessions = await UserSession.count().where(UserSession.expires_at > now)
    assert live_sessions >= 1  # the signed-in test client's own
    await Lease.insert(
        Lease(
            id=uuid.uuid4(),
            name="config:gone",
            holder="crashed agent",
            token="t",
            acquired_at=now - timedelta(days=3),
            expires_at=now - timedelta(days=2),
        ),
        Lease(
            id=uuid.uuid4(),
            name="config:held",
            holder="agent",
            token="u",
            acquired_at=now,
            expires_at=now + timedelta(minutes=5),
        ),
    )
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    for rid, when in ((stale, now - timedelta(hours=2)), (fresh, now)):
        await RunRequest.insert(
            RunRequest(
                id=rid,
                user=user["id"],
                config=uuid.UUID(config["id"]),
                agent=uuid.UUID(agent_id),
                status="pending",
                requested_at=when,
            )
        )

    report = await services.tasks.run_housekeeping(now)
    assert report is not None
    assert (report.throttles, report.sessions, report.leases, report.requests) == (1, 1, 1, 1)
    assert [r["key"] for r in await LoginThrottle.select(LoginThrottle.key)] == ["ip:new"]
    assert await UserSession.count().where(UserSession.expires_at < now) == 0
    assert await UserSession.count() == live_sessions
    assert [r["name"] for r in await Lease.select(Lease.name)] == ["config:held"]
    statuses = {
        r["id"]: r["status"] for r in await RunRequest.select(RunRequest.id, RunRequest.status)
    }
    assert statuses == {stale: "expired", fresh: "pending"}
    # The signed-in owner is still signed in.
    assert (await client.get("/api/configs")).status_code == 200
    # A second round finds nothing more to do.
    again = await services.tasks.run_housekeeping(now)
    assert again is not None
    assert (again.throttles, again.sessions, again.leases, again.requests) == (0, 0, 0, 0)
