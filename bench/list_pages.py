#!/usr/bin/env python3
"""What one page of ``GET /api/configs`` and ``GET /api/agents`` costs per row (issue 17).

    python bench/list_pages.py                                  # SQLite, 2,000 configs
    python bench/list_pages.py --db both --configs 2000 --repeat 60
    python bench/list_pages.py --db sqlite --profile            # cProfile of 500-row pages
    python bench/list_pages.py --db both --digest               # hashes of every response

A fresh database (SQLite in a temp directory, or a throwaway PostgreSQL cluster) with the real
migrations; the owner signs up through the real API; then ``--configs`` configs and 0.4 agents per
config are written straight into the tables, deterministically (a seeded generator makes every id
and value, so two runs, before and after a change, answer the same bytes): configs of both modes,
with and without schedules, retention rules, drills, commands, limits, several sources; agents of
every mode, one-shot ones with schedules to plan, deactivated ones, never-seen ones, limits.

Each list is then requested through the real app in process (``httpx`` ASGI transport, no network)
at ``?limit=`` 1, 50, 100 and 500, ``--repeat`` times after two warm-ups: the median and p95 in
milliseconds, and the 500 / 100 rows ratio. ``--digest`` prints a SHA-256 of each response and of
the whole list walked page by page with ``nextAfter``; ``--profile`` a cProfile of 500-row pages.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import logging
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fleet import PASSWORD, bench_app, close_seed_connections, insert_bulk  # noqa: E402

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
LIMITS = (1, 50, 100, 500)


def _options(i: int, rng: random.Random) -> dict[str, Any]:
    """Varied stored options, all valid (the service stored them through ``Options``)."""
    kind = i % 6
    if kind == 0:
        return {}
    if kind == 1:
        daily = {"preset": "daily", "at": "02:00", "cron": "0 2 * * *"}
        return {"retentionDays": 30, "schedule": daily}
    if kind == 2:
        return {
            "type": "incremental",
            "compression": False,
            "retentionDays": rng.randint(0, 365),
            "retention": {"keepLast": 3, "keepDaily": 7, "keepWeekly": 4},
            "schedule": {"cron": "*/30 * * * *"},
            "drill": {"every": "weekly", "sample": 10},
            "alertGraceMinutes": 15,
        }
    if kind == 3:
        return {
            "compressionFormat": "zstd",
            "excludeNodeModules": True,
            "retry": {"attempts": 5, "delaySeconds": 120},
            "limits": {"uploadKbps": 2048},
            "preCommand": "pg_dump app > /var/backups/app.sql",
            "postCommand": "rm /var/backups/app.sql",
            "commandTimeoutSeconds": 900,
            "snapshot": "vss",
            "schedule": None,
        }
    if kind == 4:
        return {
            "encryption": True,
            "schedule": {"preset": "hourly", "minute": 0, "cron": "0 * * * *"},
        }
    return {"type": "full", "retentionDays": 7, "retention": None, "drill": None, "limits": None}


async def seed(user_id: uuid.UUID, configs: int, agents: int, rng: random.Random) -> None:
    from backend.agents.tables import Agent
    from backend.backups.tables import BackupConfig

    def new_id() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    modes = [None, "daemon", "tray", "oneshot", "oneshot", "daemon"]
    agent_rows = []
    for i in range(agents):
        mode = modes[i % len(modes)]
        seen = None if i % 17 == 3 else NOW - timedelta(seconds=rng.randint(1, 86400 * 5))
        agent_rows.append(
            dict(
                id=new_id(),
                user=user_id,
                name=f"machine-{i:06d}",
                api_key_digest=f"{rng.getrandbits(256):064x}",
                api_key_prefix=f"bk_{i % 1000:04d}ab",
                active=i % 23 != 5,
                platform=None if i % 11 == 0 else "linux",
                version=None if i % 7 == 0 else "1.4.2",
                last_seen=seen,
                timezone=[None, "UTC", "Europe/Paris", "America/New_York"][i % 4],
                mode=mode,
                limits={"uploadKbps": 512, "schedule": []} if i % 9 == 2 else None,
                parallel_backups=2 if i % 13 == 1 else None,
                last_backup_failed=i % 20 == 0,
                created_at=NOW
                - timedelta(days=400, seconds=-i, microseconds=rng.choice([0, 1, 250_000])),
                updated_at=NOW - timedelta(days=1),
            )
        )
    await insert_bulk(Agent, agent_rows)
    config_rows = []
    for i in range(configs):
        server = i % 10 == 9
        agent_id = None if server else agent_rows[rng.randrange(len(agent_rows))]["id"]
        config_rows.append(
            dict(
                id=new_id(),
                user=user_id,
                name=f'config {i:06d} {"ünïcode " if i % 8 == 0 else ""}"q"',
                execution_mode="server" if server else "agent",
                agent=agent_id,
                sources=[{"path": f"/home/user{i}/documents"}]
                + ([{"path": f"C:\\Users\\u{i}\\Desktop"}] if i % 3 == 0 else []),
                excludes=["*.tmp", "node_modules"][: i % 3],
                options=_options(i, rng),
                created_at=NOW - timedelta(days=300, seconds=-i, microseconds=rng.choice([0, 7])),
                updated_at=NOW - timedelta(days=1, seconds=i),
            )
        )
    for start in range(0, len(config_rows), 5000):
        await insert_bulk(BackupConfig, config_rows[start : start + 5000])


async def run_db(kind: str, args: argparse.Namespace, workdir: Path) -> list[str]:
    import httpx

    from backend.accounts.tables import User

    lines: list[str] = []
    async with bench_app(kind, workdir, "lists") as (app, _services, engine, _url):
        rng = random.Random(17)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://bench.local")
        plain_uuid4 = uuid.uuid4
        uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # the user's id
        try:
            r = await client.post(
                "/api/auth/signup", json={"email": "owner@lists.example", "password": PASSWORD}
            )
        finally:
            uuid.uuid4 = plain_uuid4
        assert r.status_code == 201, r.text
        user = await User.select(User.id).where(User.email == "owner@lists.example").first()
        assert user is not None
        await seed(user["id"], args.configs, max(1, round(args.configs * 0.4)), rng)
        close_seed_connections()
        await engine.run_ddl("ANALYZE")

        async def get(path: str) -> bytes:
            r = await client.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            return r.content

        for what in ("configs", "agents"):
            medians: dict[int, float] = {}
            cpus: dict[int, float] = {}
            for limit in LIMITS:
                path = f"/api/{what}?limit={limit}"
                for _ in range(2):
                    body = await get(path)
                times, cpu = [], []
                for _ in range(args.repeat):
                    started, used = time.perf_counter(), time.process_time()
                    await get(path)
                    cpu.append((time.process_time() - used) * 1000)
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                medians[limit] = statistics.median(times)
                cpus[limit] = statistics.median(cpu)
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                line = (
                    f"| {kind} | {args.configs:,} | /api/{what} | {limit} "
                    f"| {medians[limit]:.2f} | {p95:.2f} | {cpus[limit]:.2f} | {len(body):,} |"
                )
                if args.digest:
                    line += f" {hashlib.sha256(body).hexdigest()[:16]} |"
                lines.append(line)
                print(line, file=sys.stderr)
            if 100 in medians and 500 in medians:
                lines.append(
                    f"| {kind} | {args.configs:,} | /api/{what} | 500 / 100 rows "
                    f"| {medians[500] / medians[100]:.2f}x | | {cpus[500] / cpus[100]:.2f}x | |"
                )
            if args.digest:
                walk = hashlib.sha256()
                path = f"/api/{what}"
                pages = 0
                while path:
                    body = await get(path)
                    walk.update(body)
                    pages += 1
                    after = httpx.Response(200, content=body).json()["nextAfter"]
                    path = f"/api/{what}?after={after}" if after else ""
                lines.append(
                    f"| {kind} | {args.configs:,} | /api/{what} walk | {pages} pages "
                    f"| | | | | {walk.hexdigest()[:16]} |"
                )
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(20):
                    await get(f"/api/{what}")
                profile.disable()
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out).sort_stats("tottime")
                stats.print_stats(25)
                print(f"[{kind}] profile of 20 x GET /api/{what} (500 rows)", file=sys.stderr)
                print(out.getvalue(), file=sys.stderr)
        await client.aclose()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--digest", action="store_true", help="hash every response")
    parser.add_argument("--profile", action="store_true", help="cProfile 500-row pages")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="backapp-lists-"))
    os.environ["BACKAPP_DATA_DIR"] = str(workdir / "default-data")
    lines: list[str] = []
    try:
        for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
            lines += asyncio.run(run_db(kind, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.repeat} requests per row, after two warm-ups; ms (CPU: this process's)\n")
    head = "| db | configs | list | rows | median | p95 | CPU median | bytes |"
    print(head + (" sha256 |" if args.digest else ""))
    print(
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
        + (" --- |" if args.digest else "")
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
