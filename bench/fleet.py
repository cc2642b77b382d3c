#!/usr/bin/env python3
"""How the owner pages and the periodic tasks scale with the size of a fleet (issue 17).

    python bench/fleet.py                                  # SQLite, 2,000 configs
    python bench/fleet.py --db postgres --configs 25000    # a throwaway PostgreSQL cluster
    python bench/fleet.py --db both --configs 100 25000 --json fleet.json   # the issue's table

What it does, per database:

1. creates a fresh database (a SQLite file in a temp directory, or a database on a throwaway
   PostgreSQL cluster started with ``tests/support/postgres.py``) and applies the real migrations
   (``python -m backend.cli migrate``);
2. signs the owner up through the real API, then seeds the fleet straight into the Piccolo tables
   in bulk (COPY on PostgreSQL, ``executemany`` on SQLite): ``--agents-per-config`` x N agents, N
   (``--configs``) configs spread over them (with a
   daily schedule and ``retentionDays`` 30), ``--backups-per-config`` backups per config spread over
   the last 31 days (so the oldest of each config is due for retention; a few failed, the newest of
   some configs running), ``--log-lines-per-config`` x N agent log lines, and ``--small-users`` small users (3
   configs, 1 agent, 20 backups each) sharing the database;
3. times every owner page and list endpoint through the real app in process (``httpx`` ASGI
   transport, no network), ``--repeat`` times after one warm-up, for the big owner and for one small
   user, and counts the SQL statements each request ran (Piccolo's query counter);
4. times the rounds of each periodic task with their statement counts: retention and alerts
   (the first round, then every round until the backlog is drained: p50 and slowest, the number of
   rounds in the "bytes" column; then one steady round) and housekeeping;
5. prints a table: p50 / p95 in milliseconds, statements per request, response size.

Nothing here asserts a target: it is a measurement, recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "fleet-bench-secret-0123456789abcdef0123456789"
PASSWORD = "correct horse battery"


@dataclass
class Timing:
    db: str
    n: int
    who: str
    what: str
    p50_ms: float
    p95_ms: float
    queries: int
    bytes: int
    status: int


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "BACKAPP_SECRET_KEY": SECRET}
    subprocess.run(
        [sys.executable, "-m", "backend.cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _sqlite_value(value: Any) -> Any:
    # What Piccolo's SQLite adapters store: text UUIDs, UTC timestamps as str(), JSON as text.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return str(value.astimezone(UTC))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


async def insert_bulk(table: Any, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (column name -> value) into ``table`` with the driver's bulk path: COPY on
    PostgreSQL, one ``executemany`` transaction on SQLite. Building a Piccolo object per row made
    the seed of 25,000 configs (a million backups) take hours."""
    if not rows:
        return
    engine = table._meta.db
    name = table._meta.tablename
    columns = list(rows[0])
    if engine.engine_type == "postgres":
        import asyncpg

        records = [
            tuple(json.dumps(v) if isinstance(v, dict | list) else v for v in row.values())
            for row in rows
        ]
        connection = await asyncpg.connect(engine.config["dsn"])
        try:
            await connection.copy_records_to_table(name, records=records, columns=columns)
        finally:
            await connection.close()
        return
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    db = _sqlite_seed_connection(engine.path)
    with db:
        db.executemany(
            f'INSERT INTO "{name}" ({quoted}) VALUES ({marks})',
            [tuple(_sqlite_value(v) for v in row.values()) for row in rows],
        )


_SEED_CONNECTIONS: dict[str, Any] = {}


def _sqlite_seed_connection(path: str) -> Any:
    """One connection for the whole seed, so its page cache stays warm between batches."""
    import sqlite3

    if path not in _SEED_CONNECTIONS:
        db = sqlite3.connect(path, timeout=60)
        # A seed, not a server: no fsync, and a page cache that holds the indexes the random
        # UUID keys scatter their inserts over (SQLite's default 2 MiB made it I/O-bound).
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -1000000")
        _SEED_CONNECTIONS[path] = db
    return _SEED_CONNECTIONS[path]


def close_seed_connections() -> None:
    for db in _SEED_CONNECTIONS.values():
        db.close()
    _SEED_CONNECTIONS.clear()


def schedule_json() -> dict[str, Any]:
    from desktop_agent.engine.schedule import Schedule

    parsed = Schedule.parse({"preset": "daily", "at": "02:00"})
    assert parsed is not None
    return parsed.to_json()


async def seed_user(
    user_id: uuid.UUID,
    *,
    agents: int,
    configs: int,
    backups_per_config: int,
    log_lines: int,
    now: datetime,
    rng: random.Random,
) -> None:
    """Bulk rows for one user: agents, configs over them, a daily history per config, logs."""
    from backend.agents.tables import Agent, AgentLog
    from backend.backups.tables import BackupConfig, BackupLog
    from backend.services.last_backup import refresh_last_backups

    options = {
        "type": "full",
        "compression": True,
        "encryption": False,
        "retentionDays": 30,
        "compressionFormat": "gzip",
        "excludeNodeModules": False,
        "schedule": schedule_json(),
        "retry": {"attempts": 1, "delaySeconds": 300},
        "alertGraceMinutes": 60,
    }
    agent_rows = []
    for i in range(agents):
        agent_id = uuid.uuid4()
        seen = now - timedelta(seconds=rng.choice([10, 20, 40, 3600, 86400 * 3]))
        agent_rows.append(
            dict(
                id=agent_id,
                user=user_id,
                name=f"machine-{i:06d}",
                api_key_digest=uuid.uuid4().hex + uuid.uuid4().hex,
                api_key_prefix="bk_bench",
                active=i % 50 != 49,
                platform="linux",
                version="1.0.0",
                last_seen=seen,
                timezone="UTC",
                last_backup_failed=i % 20 == 0,
                created_at=now - timedelta(days=400, seconds=i),
                updated_at=now - timedelta(days=1),
            )
        )
    await insert_bulk(Agent, agent_rows)
    agent_ids = [row["id"] for row in agent_rows]

    config_rows = []
    for i in range(configs):
        agent_id = agent_ids[i % len(agent_ids)] if agent_ids else None
        config_rows.append(
            dict(
                id=uuid.uuid4(),
                user=user_id,
                name=f"config-{i:06d}",
                execution_mode="agent" if agent_id else "server",
                agent=agent_id,
                sources=[{"path": f"/home/user{i}/documents"}],
                excludes=["*.tmp"],
                options=options,
                created_at=now - timedelta(days=400, seconds=i),
                updated_at=now - timedelta(days=1),
            )
        )
    await insert_bulk(BackupConfig, config_rows)

    backup_rows: list[dict[str, Any]] = []
    spacing = timedelta(days=31) / max(1, backups_per_config)

    async def flush_backups() -> None:
        await insert_bulk(BackupLog, backup_rows)
        backup_rows.clear()

    for i, config in enumerate(config_rows):
        prefix = f"users/{user_id}/agents/{config['agent']}/configs/{config['id']}"
        for day in range(backups_per_config):
            # Spread over 31 days: with retentionDays 30 the oldest one of each config is due.
            started = now - spacing * day - timedelta(minutes=rng.randint(0, 60), seconds=i % 60)
            status = "completed"
            if day == 0 and i % 25 == 0:
                status = "running"
            elif rng.random() < 0.03 or (day == 0 and i % 40 == 1):
                status = "failed"
            done = status != "running"
            backup_rows.append(
                dict(
                    id=uuid.uuid4(),
                    user=user_id,
                    config=config["id"],
                    agent=config["agent"],
                    config_name=config["name"],
                    status=status,
                    s3_path=f"{prefix}/backup-{day:05d}-{uuid.uuid4().hex[:8]}.tar.gz",
                    filename="backup.tar.gz",
                    filesize_estimate=10_000_000,
                    size=9_500_000 if status == "completed" else None,
                    sha256="0" * 64 if status == "completed" else None,
                    files_processed=1200 if done else None,
                    bytes_transferred=9_500_000 if done else None,
                    duration_ms=rng.randint(5_000, 300_000) if done else None,
                    errors=[],
                    error="disk full" if status == "failed" else None,
                    started_at=started,
                    completed_at=started + timedelta(minutes=5) if done else None,
                    trigger="schedule",
                )
            )
        if len(backup_rows) >= 50_000:
            await flush_backups()
    await flush_backups()
    # The services keep each config's newest backup on its row; these rows bypassed them.
    await refresh_last_backups(row["id"] for row in config_rows)

    levels = ["debug", "info", "info", "info", "warning", "error"]
    log_rows: list[dict[str, Any]] = []
    for i in range(log_lines):
        log_rows.append(
            dict(
                id=uuid.uuid4(),
                agent=agent_ids[i % len(agent_ids)],
                level=levels[i % len(levels)],
                message=f"line {i}: scanned the sources",
                metadata=None,
                timestamp=now - timedelta(seconds=i * 7),
            )
        )
        if len(log_rows) >= 50_000:
            await insert_bulk(AgentLog, log_rows)
            log_rows.clear()
    await insert_bulk(AgentLog, log_rows)


async def explain_slow(database_url: str, statement: str) -> None:
    """After a slow round on PostgreSQL: the plan its slowest statement gets now (it may differ
    from the plan it ran with if autovacuum analysed a table meanwhile), and the tables whose
    statistics autovacuum would renew (rows changed since their last ANALYZE over its threshold):
    a plan made from statistics older than the rows is what made alert rounds of 16-22 s."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        plan = await connection.fetch(f"EXPLAIN {statement}")
        print("    its plan now:", file=sys.stderr)
        for row in plan[:25]:
            print(f"      {row[0][:200]}", file=sys.stderr)
        stale = await connection.fetch(
            "SELECT relname, n_live_tup, n_mod_since_analyze,"
            " COALESCE(last_autoanalyze, last_analyze) AS analysed FROM pg_stat_user_tables"
            " WHERE n_mod_since_analyze > 50 + 0.1 * n_live_tup ORDER BY relname"
        )
        for row in stale:
            print(
                f"    stale statistics: {row['relname']} ({row['n_live_tup']} rows,"
                f" {row['n_mod_since_analyze']} changed since analysed at {row['analysed']})",
                file=sys.stderr,
            )
    except asyncpg.PostgresError as exc:
        print(f"    (no plan: {exc})", file=sys.stderr)
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def timed(
    engine: Any, repeat: int, fn: Callable[[], Awaitable[tuple[int, int]]]
) -> tuple[float, float, int, int, int]:
    """p50, p95 (ms), statements of the last run, bytes and status of the last response."""
    await fn()  # warm-up
    times: list[float] = []
    queries = size = status = 0
    for _ in range(repeat):
        before = engine.query_id
        started = time.perf_counter()
        status, size = await fn()
        times.append((time.perf_counter() - started) * 1000)
        queries = engine.query_id - before
    return percentile(times, 0.5), percentile(times, 0.95), queries, size, status


@contextlib.asynccontextmanager
async def bench_app(
    kind: str, workdir: Path, name: str, **options: Any
) -> AsyncIterator[tuple[Any, Any, Any, str]]:
    """A fresh database of ``kind`` with the real migrations (SQLite in ``workdir``, PostgreSQL
    in a throwaway cluster, stopped after) and the real app on it, its tables bound to an engine
    of their own (a pool on PostgreSQL): ``(app, services, engine, database_url)``. ``options``
    go to the app's ``Settings``."""
    from backend.app import create_app, freeze_startup_objects
    from backend.db import bind_tables, make_engine
    from backend.services import Services
    from backend.settings import Settings

    cluster = None
    if kind == "sqlite":
        database_url = f"sqlite:///{workdir / f'{name}.sqlite3'}"
    else:
        from tests.support.postgres import start_cluster

        cluster = start_cluster()
        database_url = cluster.create_database(name)
    try:
        migrate(database_url)
        settings = Settings(  # type: ignore[call-arg]
            data_dir=workdir / "data",
            database_url=database_url,
            secret_key=SECRET.encode(),
            public_url="http://bench.local",
            task_interval=3600.0,
            allow_signup=True,
            **options,
        )
        services = Services.build(settings)
        app = create_app(settings, services)
        freeze_startup_objects()  # as `backapp serve` does once started
        engine = make_engine(database_url)
        bind_tables(engine)
        pool = kind == "postgres"
        if pool:
            await engine.start_connection_pool(max_size=10)  # type: ignore[attr-defined]
        try:
            yield app, services, engine, database_url
        finally:
            if pool:
                await engine.close_connection_pool()  # type: ignore[attr-defined]
    finally:
        if cluster is not None:
            cluster.stop()


async def run_db(kind: str, args: argparse.Namespace, workdir: Path) -> list[Timing]:
    import httpx

    from backend.accounts.tables import User

    results: list[Timing] = []
    async with bench_app(kind, workdir, "fleet", round_budget_seconds=args.round_budget) as (
        app,
        services,
        engine,
        database_url,
    ):
        transport = httpx.ASGITransport(app=app)
        clients: dict[str, httpx.AsyncClient] = {}
        now = datetime.now(UTC)
        rng = random.Random(17)
        started = time.perf_counter()
        owners = [("big", "owner@fleet.example")] + [
            (f"small{i}", f"small{i}@fleet.example") for i in range(args.small_users)
        ]
        for who, email in owners:
            client = httpx.AsyncClient(transport=transport, base_url="http://bench.local")
            r = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
            assert r.status_code == 201, r.text
            clients[who] = client
            user = await User.select(User.id).where(User.email == email).first()
            assert user is not None
            if who == "big":
                await seed_user(
                    user["id"],
                    agents=args.agents,
                    configs=args.configs,
                    backups_per_config=args.backups_per_config,
                    log_lines=args.log_lines,
                    now=now,
                    rng=rng,
                )
            else:
                await seed_user(
                    user["id"],
                    agents=1,
                    configs=3,
                    backups_per_config=20,
                    log_lines=100,
                    now=now,
                    rng=rng,
                )
        close_seed_connections()
        # A live database's autovacuum keeps the visibility map of settled rows set, so that
        # index-only scans skip the table; a freshly bulk-loaded one has none until it runs.
        await engine.run_ddl("VACUUM ANALYZE" if kind == "postgres" else "ANALYZE")
        print(f"[{kind}] seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        tasks = services.tasks
        # The presence round stores which agents are offline (the dashboard reads it): once
        # before the pages, as a running server would have done.
        # The presence round stores which agents are offline (the dashboard reads it): before
        # the pages, as a running server would have done. A backlog of silent agents (here
        # all of them at once, as after an upgrade) is marked over bounded rounds.
        presence_ms: list[float] = []
        presence_queries = 0
        more = True
        while more and len(presence_ms) < 10_000:
            before = engine.query_id
            t0 = time.perf_counter()
            report = await tasks.run_presence()  # the pages are read at the real time
            presence_ms.append((time.perf_counter() - t0) * 1000)
            presence_queries += engine.query_id - before
            more = bool(getattr(report, "more", False))
        presence_ms.sort()
        results.append(
            Timing(
                kind,
                args.configs,
                "task",
                "presence (backlog until drained)",
                presence_ms[len(presence_ms) // 2],
                presence_ms[-1],
                presence_queries,
                len(presence_ms),
                0,
            )
        )
        print(
            f"[{kind}] task presence backlog: {len(presence_ms)} rounds,"
            f" slowest {presence_ms[-1]:.0f} ms",
            file=sys.stderr,
        )

        for who in ("big", "small0" if args.small_users else None):
            if who is None:
                continue
            client = clients[who]
            pages = [
                "/",
                "/configs",
                "/agents",
                "/backups",
                "/api/configs",
                "/api/agents",
                # The lists' default page is 500 rows; a page the size of the console's
                # shows what the fleet's size, not the page's, costs.
                "/api/configs?limit=50",
                "/api/agents?limit=50",
                "/api/backups",
            ]
            total = (await client.get("/api/backups?limit=1")).json().get("total", 0)
            # The last page: by page number before keyset pagination, else by the cursor the
            # API gives for the rows after the last 25 (and 50) of the history.
            tail = (await client.get(f"/api/backups?offset={max(0, total - 26)}&limit=1")).json()
            if "nextAfter" in tail:
                if tail["nextAfter"]:
                    pages.insert(4, "/backups?" + urlencode({"after": tail["nextAfter"]}))
                deep = await client.get(f"/api/backups?offset={max(0, total - 51)}&limit=1")
                if deep.json()["nextAfter"]:
                    pages.append("/api/backups?" + urlencode({"after": deep.json()["nextAfter"]}))
            else:
                pages.insert(4, f"/backups?page={max(1, (total - 1) // 25 + 1)}")
            offsets: dict[str, str] = {}
            if total > 50:
                # The last page reads from the oldest end; 10,000 rows from the newest is
                # the deepest skip the API allows (its OFFSET_WINDOW), or the middle.
                offsets[f"/api/backups?offset={total - 50}"] = "offset=(last 50)"
                deep = min(10_000, total // 2)
                offsets[f"/api/backups?offset={deep}"] = "offset=(10,000 or middle)"
                pages += list(offsets)
            for path in pages:

                async def fetch(
                    path: str = path, client: httpx.AsyncClient = client
                ) -> tuple[int, int]:
                    r = await client.get(path)
                    return r.status_code, len(r.content)

                p50, p95, queries, size, status = await timed(engine, args.repeat, fetch)
                # One label per page whatever the cursor or offset, so N's compare.
                shown = re.sub(r"after=[^&]+", "after=(deep page)", path)
                shown = re.sub(r"offset=\d+", offsets.get(path, "offset"), shown)
                results.append(
                    Timing(kind, args.configs, who, f"GET {shown}", p50, p95, queries, size, status)
                )
                print(
                    f"[{kind}] {who} GET {shown}: p95 {p95:.0f} ms, {queries} q",
                    file=sys.stderr,
                )

        engine_class = type(engine)
        plain = engine_class.run_querystring

        async def timed_round(fn: Callable[[], Awaitable[Any]]) -> tuple[float, int, Any]:
            # Each statement's time, so that a round slower than --slow-round says why.
            statements: list[tuple[float, str]] = []

            async def traced(self: Any, querystring: Any, *a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await plain(self, querystring, *a, **k)
                finally:
                    took = (time.perf_counter() - started) * 1000
                    statements.append((took, str(querystring)))

            engine_class.run_querystring = traced  # type: ignore[method-assign]
            before = engine.query_id
            t0 = time.perf_counter()
            try:
                report = await fn()
            finally:
                engine_class.run_querystring = plain  # type: ignore[method-assign]
            ms = (time.perf_counter() - t0) * 1000
            if ms > args.slow_round * 1000:
                print(
                    f"[{kind}] a round took {ms:.0f} ms ({len(statements)} statements,"
                    f" {sum(t for t, _ in statements):.0f} ms in them); the slowest:",
                    file=sys.stderr,
                )
                ranked = sorted(statements, key=lambda item: item[0], reverse=True)
                for took, text in ranked[:5]:
                    print(f"    {took:9.1f} ms  {text[:240]}".replace("\n", " "), file=sys.stderr)
                if kind == "postgres" and ranked:
                    await explain_slow(database_url, ranked[0][1])
            return ms, engine.query_id - before, report

        def record(name: str, ms: list[float], queries: int, rounds: int = 1) -> None:
            ms = sorted(ms)
            results.append(
                Timing(
                    kind,
                    args.configs,
                    "task",
                    name,
                    ms[len(ms) // 2],
                    ms[-1],
                    queries,
                    rounds,
                    0,
                )
            )
            extra = f", {rounds} rounds, slowest {ms[-1]:.0f} ms" if rounds > 1 else ""
            print(f"[{kind}] task {name}: {ms[len(ms) // 2]:.0f} ms{extra}", file=sys.stderr)

        ms, queries, _ = await timed_round(lambda: tasks.run_presence())
        record("presence (next round)", [ms], queries)
        for name, fn in (
            ("retention", lambda: tasks.run_retention(now)),
            ("alerts", lambda: tasks.run_alerts(now)),
        ):
            ms, queries, report = await timed_round(fn)
            record(f"{name} (first round)", [ms], queries)
            # Bounded rounds leave the rest of a backlog to the next ones: run them until
            # one says it is done (``more``); the slowest is what the budget must hold.
            times, total, rounds = [ms], queries, 1
            while getattr(report, "more", False) and rounds < 10_000:
                ms, queries, report = await timed_round(fn)
                times.append(ms)
                total += queries
                rounds += 1
            record(f"{name} (backlog until drained)", times, total, rounds)
            ms, queries, _ = await timed_round(fn)
            record(f"{name} (next round)", [ms], queries)
        ms, queries, _ = await timed_round(lambda: tasks.run_housekeeping(now))
        record("housekeeping", [ms], queries)
        for client in clients.values():
            await client.aclose()
    return results


def print_table(results: list[Timing], args: argparse.Namespace) -> None:
    sizes = sorted({t.n for t in results})
    print(
        f"\nfleet: N = {', '.join(map(str, sizes))} configs; per N: {args.agents_per_config} agents,"
        f" {args.backups_per_config} backups and {args.log_lines_per_config} log lines per config,"
        f" {args.small_users} small users; {args.repeat} runs per page\n"
    )
    smallest = {(t.db, t.who, t.what): t for t in results if t.n == sizes[0]}
    print(f"| db | N | who | what | p50 ms | p95 ms | statements | bytes | ratio to N={sizes[0]} |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for t in results:
        flag = "" if t.status in (0, 200) else f" (HTTP {t.status})"
        base = smallest.get((t.db, t.who, t.what))
        ratio = f"{t.p95_ms / base.p95_ms:.1f}x" if base and t.n != base.n and base.p95_ms else ""
        print(
            f"| {t.db} | {t.n:,} | {t.who} | {t.what}{flag} | {t.p50_ms:.1f} | {t.p95_ms:.1f} "
            f"| {t.queries} | {t.bytes:,} | {ratio} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument(
        "--configs", type=int, nargs="+", default=[2000], help="N; several: a run per N and ratios"
    )
    parser.add_argument("--agents-per-config", type=float, default=0.4)
    parser.add_argument("--backups-per-config", type=int, default=40)
    parser.add_argument("--log-lines-per-config", type=int, default=200)
    parser.add_argument("--small-users", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--round-budget",
        type=float,
        default=1.0,
        help="seconds a retention or alert round works through a backlog (0: no limit)",
    )
    parser.add_argument(
        "--slow-round",
        type=float,
        default=5.0,
        help="print the slowest statements of any round that takes longer (seconds)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: list[Timing] = []
    for n in sorted(args.configs):
        run = argparse.Namespace(**vars(args))
        run.configs = n
        run.agents = max(1, round(n * args.agents_per_config))
        run.log_lines = n * args.log_lines_per_config
        workdir = Path(tempfile.mkdtemp(prefix="backapp-fleet-"))
        os.environ["BACKAPP_DATA_DIR"] = str(workdir / "default-data")
        try:
            for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
                results += asyncio.run(run_db(kind, run, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if args.json:  # after every size: a long run leaves what it measured so far
            args.json.write_text(json.dumps([asdict(t) for t in results], indent=2))
    print_table(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
