"""The owner's lists read only the columns they show and decode them straight into their structs
(issue 17: a 500-row page cost ~5x a 100-row one). Their answers must not change: a full default
page of ``/api/configs`` and ``/api/agents``, and a walk through small pages, are compared byte for
byte with what the code before that change made of the whole rows (kept here, verbatim).

Real app, real SQLite and PostgreSQL (``client``'s ``db_url``)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from backend.agents.tables import Agent
from backend.api.owner import DEFAULT_LIST, MAX_LIST
from backend.backups.tables import BackupConfig
from backend.db import json_value
from backend.schemas import (
    AgentListResponse,
    AgentOut,
    ConfigListResponse,
    ConfigOut,
    Destination,
    Options,
    Source,
)
from backend.services import Services
from backend.services.agents import compute_status
from backend.services.alerts import oneshot_expected_by
from backend.services.clock import aware, iso, utcnow
from backend.services.cursors import Cursor
from backend.services.keys import config_prefix
from backend.services.limits import stored_limits
from backend.services.presence import ONESHOT
from tests.support.api import ApiClient, signed_in_user

AGENTS, CONFIGS = MAX_LIST + 7, MAX_LIST + 9
DAILY = {"preset": "daily", "at": "02:00", "cron": "0 2 * * *"}
OPTIONS: list[dict[str, Any] | str] = [
    {},
    {"retentionDays": 30, "schedule": DAILY},
    {
        "type": "incremental",
        "compression": False,
        "retentionDays": 365,
        "retention": {"keepLast": 3, "keepDaily": 7, "keepWeekly": 4},
        "schedule": {"cron": "*/30 * * * *"},
        "drill": {"every": "weekly", "sample": 10},
        "alertGraceMinutes": 15,
    },
    {
        "compressionFormat": "zstd",
        "excludeNodeModules": True,
        "retry": {"attempts": 5, "delaySeconds": 120},
        "limits": {"uploadKbps": 2048},
        "preCommand": "pg_dump app > /var/backups/app.sql",
        "postCommand": "rm /var/backups/app.sql",
        "commandTimeoutSeconds": 900,
        "snapshot": "vss",
        "schedule": None,
        "someFutureField": [1, 2],
    },
    {"encryption": True, "schedule": {"preset": "hourly", "minute": 0, "cron": "0 * * * *"}},
    "null",  # JSON null: the defaults
]
UNICODE = "\u00fcn\u00efcode "


async def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 200):
        await table.insert(*[table(**row) for row in rows[start : start + 200]])


async def _seed(user_id: uuid.UUID, now: datetime) -> None:
    rng = random.Random(17)
    modes = [None, "daemon", "tray", ONESHOT, ONESHOT, "daemon"]
    agents = [
        dict(
            id=uuid.uuid4(),
            user=user_id,
            name=f'machine {i:04d} \u00e9"',
            api_key_digest=f"{rng.getrandbits(256):064x}",
            api_key_prefix=f"bk_{i:04d}ab",
            active=i % 23 != 5,
            platform=None if i % 11 == 0 else "linux",
            version=None if i % 7 == 0 else "1.4.2",
            # Online (seconds ago), idle or offline one-shot ones, never seen: far from the
            # boundaries, so that the two readings a moment apart agree.
            last_seen=None
            if i % 17 == 3
            else now - timedelta(seconds=rng.choice([5, 3600, 86400 * 3])),
            timezone=[None, "UTC", "Europe/Paris", "America/New_York"][i % 4],
            mode=modes[i % len(modes)],
            limits={"uploadKbps": 512} if i % 9 == 2 else None,
            parallel_backups=2 if i % 13 == 1 else None,
            created_at=now - timedelta(days=40, seconds=-i, microseconds=rng.choice([0, 1, 25])),
            updated_at=now,
        )
        for i in range(AGENTS)
    ]
    # A few agents share a creation time: the id breaks the tie.
    agents[10]["created_at"] = agents[11]["created_at"]
    await _insert(Agent, agents)
    configs = []
    for i in range(CONFIGS):
        server = i % 10 == 9
        configs.append(
            dict(
                id=uuid.uuid4(),
                user=user_id,
                name=f'config {i:04d} {UNICODE if i % 8 == 0 else ""}"q"',
                execution_mode="server" if server else "agent",
                # Most agents get one config or more; some none.
                agent=None if server else agents[rng.randrange(AGENTS - 50)]["id"],
                sources=[{"path": f"/home/user{i}/documents"}]
                + ([{"path": f"C:\\Users\\u{i}\\Desktop"}] if i % 3 == 0 else []),
                excludes=["*.tmp", "node_modules"][: i % 3],
                options=OPTIONS[i % len(OPTIONS)],
                created_at=now - timedelta(days=30, seconds=-i, microseconds=rng.choice([0, 7])),
                updated_at=now - timedelta(seconds=i),
            )
        )
    configs[20]["created_at"] = configs[21]["created_at"]
    await _insert(BackupConfig, configs)


# --- the code before the change, verbatim but for its names ------------------------------------


def _old_config_out(row: dict[str, Any], services: Services) -> ConfigOut:
    storage = services.configs.storage
    return ConfigOut(
        id=str(row["id"]),
        name=row["name"],
        execution_mode=row["execution_mode"],
        agent_id=str(row["agent"]) if row["agent"] else None,
        sources=msgspec.convert(json_value(row["sources"]), list[Source]),
        excludes=list(json_value(row["excludes"]) or []),
        destination=Destination(
            bucket=storage.bucket,
            region=storage.region,
            prefix=config_prefix(user_id=row["user"], agent_id=row["agent"], config_id=row["id"]),
        ),
        options=msgspec.convert(json_value(row["options"]) or {}, Options, from_attributes=False),
        created_at=iso(row["created_at"]) or "",
        updated_at=iso(row["updated_at"]) or "",
    )


async def _old_agent_configs(agents: list[dict[str, Any]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    result: dict[uuid.UUID, list[dict[str, Any]]] = {a["id"]: [] for a in agents}
    oneshot = [a["id"] for a in agents if a["mode"] == ONESHOT]
    others = [a["id"] for a in agents if a["mode"] != ONESHOT]
    for ids, columns in (
        (others, (BackupConfig.id, BackupConfig.agent)),
        (oneshot, (BackupConfig.id, BackupConfig.agent, BackupConfig.options)),
    ):
        if ids:
            for row in await BackupConfig.select(*columns).where(BackupConfig.agent.is_in(ids)):
                result[row["agent"]].append(row)
    return result


def _old_agent_out(
    row: dict[str, Any], services: Services, configs: list[dict[str, Any]]
) -> AgentOut:
    registry, settings = services.agents.registry, services.agents.settings
    last_seen = registry.last_seen(row["id"], row["last_seen"])
    expected_by = (
        oneshot_expected_by(aware(last_seen) or last_seen, row["timezone"], configs, settings)
        if row["mode"] == ONESHOT and last_seen is not None
        else None
    )
    return AgentOut(
        id=str(row["id"]),
        name=row["name"],
        status=compute_status(
            active=bool(row["active"]),
            last_seen=last_seen,
            now=utcnow(),
            offline_after=settings.offline_after_seconds,
            expected_by=expected_by,
        ),
        active=bool(row["active"]),
        platform=row["platform"],
        version=row["version"],
        last_seen=iso(last_seen),
        api_key_prefix=row["api_key_prefix"],
        created_at=iso(row["created_at"]) or "",
        config_ids=[str(c["id"]) for c in configs],
        mode=row["mode"] if row["mode"] in ("daemon", "tray", "oneshot") else None,
        expected_by=iso(expected_by),
        limits=stored_limits(row.get("limits")),
        parallel_backups=row.get("parallel_backups"),
    )


async def _walk(client: ApiClient, path: str, limit: int) -> list[Any]:
    pages: list[Any] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        page = (await client.get(path, params=params)).json()
        pages.append(page)
        after = page["nextAfter"]
        if not after:
            return pages


async def test_full_pages_answer_what_the_whole_rows_made_before(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    await _seed(me.id, now)
    # One config and one agent the real API made, for their stored forms.
    agent_id, _ = await client.register_agent()
    await client.create_config(agent_id, name="made by the API", sources=[{"path": "/srv"}])

    config_rows = await BackupConfig.select().where(BackupConfig.user == me.id)
    config_rows.sort(key=lambda r: (aware(r["created_at"]), str(r["id"])))
    old_configs = [_old_config_out(r, services) for r in config_rows]
    agent_rows = await Agent.select().where(Agent.user == me.id)
    agent_rows.sort(key=lambda r: (aware(r["created_at"]), str(r["id"])))
    related = await _old_agent_configs(agent_rows)
    old_agents = [_old_agent_out(r, services, related[r["id"]]) for r in agent_rows]
    assert {a.status for a in old_agents} == {"online", "idle", "offline"}
    assert sum(a.expected_by is not None for a in old_agents) > 50

    def cursor(kind: str, row: dict[str, Any]) -> str:
        at = aware(row["created_at"])
        assert at is not None
        return services.cursors.encode(kind, me.id, Cursor(at=at, id=uuid.UUID(str(row["id"]))))

    r = await client.get("/api/configs", params={"limit": MAX_LIST})
    assert r.status_code == 200
    expected = ConfigListResponse(
        configs=old_configs[:MAX_LIST], next_after=cursor("configs", config_rows[MAX_LIST - 1])
    )
    assert r.content == msgspec.json.encode(expected)

    r = await client.get("/api/agents", params={"limit": MAX_LIST})
    assert r.status_code == 200
    expected_agents = AgentListResponse(
        agents=old_agents[:MAX_LIST], next_after=cursor("agents", agent_rows[MAX_LIST - 1])
    )
    assert r.content == msgspec.json.encode(expected_agents)

    # Without ``limit``: a page of DEFAULT_LIST, whatever the size of the fleet.
    for path, rows in (("/api/configs", config_rows), ("/api/agents", agent_rows)):
        kind = path.rsplit("/", 1)[1]
        page = (await client.get(path)).json()
        assert [x["id"] for x in page[kind]] == [str(r["id"]) for r in rows[:DEFAULT_LIST]]
        assert page["nextAfter"] == cursor(kind, rows[DEFAULT_LIST - 1])

    # Small pages, walked with their cursors, make the same lists; so do the service's others.
    pages = await _walk(client, "/api/configs", 37)
    assert [c for p in pages for c in p["configs"]] == msgspec.to_builtins(old_configs)
    pages = await _walk(client, "/api/agents", 41)
    assert [a for p in pages for a in p["agents"]] == msgspec.to_builtins(old_agents)
    assert await services.configs.list_configs(me) == old_configs
    some = [str(r["id"]) for r in config_rows[::7]]
    assert await services.configs.by_ids(me, some) == old_configs[::7]
    assert await services.agents.list_agents(me) == old_agents
    assert await services.configs.get(me, some[3]) == old_configs[21]
