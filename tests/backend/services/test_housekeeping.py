"""The housekeeping task: old throttle rows, expired sessions, long-lapsed leases and stale Back Up
Now requests go; everything still in use stays. Real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from backend.accounts.tables import LoginThrottle, User, UserSession
from backend.agents.tables import PairingCode
from backend.backups.tables import Lease, RestoreJob, RunRequest
from backend.services import Services
from backend.services.clock import utcnow
from tests.support.api import ApiClient, complete_one_backup


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


async def test_housekeeping_drops_pairing_codes_a_day_past_their_end(
    client: ApiClient, services: Services
) -> None:
    """A used or expired pairing code is kept a day (so presenting it again says *used* or
    *expired*, not *unknown*), then its row goes; a live code stays."""
    await services.tasks.started()
    await client.signup()
    user = await User.select(User.id).first()
    assert user is not None
    now = utcnow()
    rows = {
        "live": (now + timedelta(minutes=10), None),
        "expired-now": (now - timedelta(minutes=5), None),
        "used-today": (now - timedelta(hours=2), now - timedelta(hours=2, minutes=10)),
        "expired-old": (now - timedelta(days=2), None),
        "used-old": (now - timedelta(days=1, minutes=1), now - timedelta(days=1, minutes=10)),
    }
    for name, (expires, used) in rows.items():
        await PairingCode.insert(
            PairingCode(
                id=uuid.uuid4(),
                user=user["id"],
                name=name,
                code_digest=name.ljust(64, "0"),
                expires_at=expires,
                used_at=used,
                created_at=expires - timedelta(minutes=15),
            )
        )

    report = await services.tasks.run_housekeeping(now)
    assert report is not None and report.pairing_codes == 2
    left = sorted(r["name"] for r in await PairingCode.select(PairingCode.name))
    assert left == ["expired-now", "live", "used-today"]
    again = await services.tasks.run_housekeeping(now)
    assert again is not None and again.pairing_codes == 0


async def test_housekeeping_expires_restores_nobody_took_within_a_day(
    client: ApiClient, services: Services
) -> None:
    """A web restore for a machine that stays off becomes ``expired`` in the periodic round too,
    not only when someone looks at it; one still inside its day stays ``pending``."""
    await services.tasks.started()
    await client.signup()
    agent_id, key = await client.register_agent("laptop", "linux")
    config = await client.create_config(agent_id)
    backup_id = await complete_one_backup(client, key, config["id"])
    url = f"/api/backups/{backup_id}/restore"
    ids = []
    for _ in range(2):
        r = await client.post(url, json={"agentId": agent_id, "target": "/home/me/restored"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    old, fresh = ids
    now = utcnow()
    await RestoreJob.update({RestoreJob.expires_at: now - timedelta(seconds=1)}).where(
        RestoreJob.id == old
    )

    report = await services.tasks.run_housekeeping(now)
    assert report is not None and report.restores == 1
    statuses = {
        str(r["id"]): r["status"] for r in await RestoreJob.select(RestoreJob.id, RestoreJob.status)
    }
    assert statuses == {old: "expired", fresh: "pending"}
