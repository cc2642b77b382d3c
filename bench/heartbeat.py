#!/usr/bin/env python3
"""Load benchmark of the agent heartbeat, the server's hottest path.

    python bench/heartbeat.py                     # SQLite (the embedded default)
    python bench/heartbeat.py --db postgres       # a throwaway PostgreSQL cluster
    python bench/heartbeat.py --db both --seconds 10 --connections 32

What it does, per database, all on loopback and bounded in time:

1. starts a real ``backapp serve`` process (``python -m backend.cli serve --no-access-log``, 1 worker,
   a temp ``BACKAPP_DATA_DIR``, ``BACKAPP_AGENT_RATE_LIMIT`` high enough not to throttle the bench) on
   a free port; for PostgreSQL it first starts a throwaway cluster with
   ``tests/support/postgres.py``'s ``start_cluster()`` and sets ``DATABASE_URL``;
2. signs up once and registers ``--agents`` agents (default 1,000) through ``POST /api/agent/register``,
   so every key is real (HMAC digest in the database), plus one control agent that never heartbeats;
3. drives it with ``wrk`` (closed loop, ``--connections`` connections, ``--seconds`` per run, after a
   short warm-up): the baseline ``GET /api/health`` (a plain handler, no database) and then
   ``POST /api/agent/heartbeat`` rotating round-robin through the agents' keys (one key per request);
   on a machine with >= 2 cores the server is pinned to CPU 0 and wrk to CPU 1 with ``taskset``;
4. checks correctness after the run: ``GET /api/agents`` shows every heartbeating agent ``online`` and
   the control agent ``offline``, and the coalesced ``last_seen`` writes reached the database (every
   agent's stored ``last_seen`` is newer than the start of the measured run) within a few flush periods;
5. prints a table (requests/s, p50/p90/p99/max latency, non-2xx, socket errors, server and wrk CPU,
   heartbeat/baseline ratio) and whether the target (>= 5,000 heartbeats/s at p99 <= 20 ms) is met.
   The target line is a report, not an assertion.

Exit status: 0 when every response was 2xx and the status/``last_seen`` checks passed, 1 otherwise,
2 when the benchmark could not run (wrk missing, server did not start, ...).

Requirements: ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``; macOS: ``brew install wrk``), and for
``--db postgres`` the PostgreSQL server binaries (``apt-get install postgresql``; see
tests/support/postgres.py). ``--server-root DIR`` runs the server from another checkout (a scratch copy
with a candidate change) instead of this one.

Caveat: wrk is closed-loop, so at saturation latency is mostly queueing: mean latency is about
connections / throughput. Fewer connections give lower latency at (nearly) the same throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_RPS = 5000.0
TARGET_P99_MS = 20.0
NOISY_OTHER_CPU = 0.15  # other processes using more than this share of a core spoil a run
HEARTBEAT_BODY = '{"version":"0.1.0","platform":"linux"}'
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
WRK_HINT = "install wrk: `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"

# --- wrk scripts ---------------------------------------------------------------------------------

_LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""

# One pre-formatted request per key; each wrk thread starts at its own offset and goes round-robin.
_LUA_HEARTBEAT = r"""
local thread_count = 0
function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local reqs, n, i = {}, 0, 0
function init(args)
  local body = '%BODY%'
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("POST", "/api/agent/heartbeat",
        {["Content-Type"] = "application/json", ["X-Agent-API-Key"] = line}, body)
    end
  end
  i = ((thread_index or 0) * 97) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end
""".replace("%BODY%", HEARTBEAT_BODY)


# --- process bookkeeping (everything started here is stopped in cleanup) --------------------------


class Cleanup:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dirs: list[Path] = []
        self.clusters: list[Any] = []

    def run(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()
        for cluster in reversed(self.clusters):
            try:
                cluster.stop()
            except Exception as exc:  # noqa: BLE001 - best effort
                print(f"bench: stopping the PostgreSQL cluster failed: {exc}", file=sys.stderr)
        self.clusters.clear()
        for d in reversed(self.dirs):
            shutil.rmtree(d, ignore_errors=True)
        self.dirs.clear()


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, wait: float = 15.0
) -> None:
    """SIGINT the process group (graceful: the server flushes), then SIGKILL it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinning(enabled: bool) -> tuple[list[str], list[str]]:
    """taskset prefixes (server on CPU 0, wrk on CPU 1) when possible."""
    taskset = shutil.which("taskset")
    if not enabled or taskset is None or (os.cpu_count() or 1) < 2:
        return [], []
    return [taskset, "-c", "0"], [taskset, "-c", "1"]


def machine_busy_seconds() -> float:
    """CPU seconds spent by everything on the machine (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- server ---------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    database_url: str
    flush_seconds: float

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def start_server(
    args: argparse.Namespace, work: Path, database_url: str | None, cleanup: Cleanup
) -> Server:
    import httpx

    server_root = Path(args.server_root).resolve()
    port = free_port()
    data_dir = work / "data"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKAPP_", "AWS_")) and k not in ("DATABASE_URL", "PYTHONPATH")
    }
    env.update(
        {
            "PYTHONPATH": str(server_root),
            "PYTHONUNBUFFERED": "1",
            "BACKAPP_DATA_DIR": str(data_dir),
            "BACKAPP_HOST": "127.0.0.1",
            "BACKAPP_PORT": str(port),
            "BACKAPP_WORKERS": "1",
            "BACKAPP_SECRET_KEY": SECRET,
            "BACKAPP_AGENT_RATE_LIMIT": str(10_000_000),
            "BACKAPP_LOG_LEVEL": "warning",
        }
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    flush = float(env.get("BACKAPP_HEARTBEAT_FLUSH_SECONDS", "2.0"))
    server_pin, _ = pinning(args.pin)
    cmd = [*server_pin, sys.executable, "-m", "backend.cli", "serve", "--no-access-log"]
    log_path = work / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=server_root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cleanup.procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    server = Server(
        url, proc, env, log_path, database_url or f"sqlite:///{data_dir / 'backapp.sqlite3'}", flush
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"backapp serve exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"backapp serve did not answer within 90 s:\n{server.log_tail()}")


class BenchError(RuntimeError):
    pass


# --- agents ---------------------------------------------------------------------------------------


@dataclass
class Fleet:
    owner_cookies: dict[str, str]
    keys: list[str]
    ids: list[str]
    control_id: str
    seconds: float = 0.0
    prime_seconds: float = 0.0


async def _register(url: str, count: int, deadline: float) -> Fleet:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post(
            "/api/auth/signup",
            json={"email": "bench@example.com", "password": "bench password 123"},
        )
        if r.status_code != 201:
            raise BenchError(f"signup answered {r.status_code}: {r.text}")
        csrf = http.cookies.get("csrftoken") or ""
        keys: list[str | None] = [None] * count
        ids: list[str | None] = [None] * count
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count + 1):
            queue.put_nowait(i)

        control: dict[str, str] = {}

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if time.monotonic() > deadline:
                    raise BenchError("registering the agents took too long")
                name = f"bench-{i:05d}" if i < count else "bench-control (never heartbeats)"
                resp = await http.post(
                    "/api/agent/register",
                    json={"name": name, "platform": "linux"},
                    headers={"x-csrftoken": csrf},
                )
                if resp.status_code != 201:
                    raise BenchError(f"register answered {resp.status_code}: {resp.text}")
                agent = resp.json()["agent"]
                if i < count:
                    keys[i], ids[i] = agent["apiKey"], agent["id"]
                else:
                    control["id"] = agent["id"]

        await asyncio.gather(*(worker() for _ in range(8)))
        cookies = {k: v for k, v in http.cookies.items()}
    return Fleet(cookies, [k for k in keys if k], [i for i in ids if i], control["id"])


def register_agents(server: Server, count: int) -> Fleet:
    t0 = time.monotonic()
    fleet = asyncio.run(_register(server.url, count, t0 + 180))
    fleet.seconds = time.monotonic() - t0
    if len(fleet.keys) != count:
        raise BenchError(f"registered {len(fleet.keys)} agents, wanted {count}")
    return fleet


async def _prime(url: str, keys: list[str], deadline: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        pending = list(keys)

        async def worker() -> None:
            while pending:
                key = pending.pop()
                if time.monotonic() > deadline:
                    raise BenchError("the first heartbeats took too long")
                r = await http.post(
                    "/api/agent/heartbeat",
                    content=HEARTBEAT_BODY,
                    headers={"X-Agent-API-Key": key, "Content-Type": "application/json"},
                )
                if r.status_code != 200:
                    raise BenchError(f"heartbeat answered {r.status_code}: {r.text}")

        await asyncio.gather(*(worker() for _ in range(8)))


def prime_agents(server: Server, fleet: Fleet) -> float:
    t0 = time.monotonic()
    asyncio.run(_prime(server.url, fleet.keys, t0 + 120))
    return time.monotonic() - t0


# --- wrk ------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    name: str
    rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    server_cpu: float  # fraction of one core
    wrk_cpu: float
    other_cpu: float  # cores used by everything else on the machine during the run (noise)
    raw: dict[str, Any] = field(default_factory=dict)


def run_wrk(
    args: argparse.Namespace,
    server: Server,
    script: Path,
    path: str,
    seconds: float,
    name: str,
    extra: list[str],
    cleanup: Cleanup,
) -> RunResult:
    _, wrk_pin = pinning(args.pin)
    cmd = [
        *wrk_pin,
        args.wrk,
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{max(1, int(round(seconds)))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        server.url + path,
        *(["--", *extra] if extra else []),
    ]
    cpu0 = proc_cpu_seconds(server.proc.pid)
    busy0 = machine_busy_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    cleanup.procs.append(proc)
    try:
        out, err = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        stop_process(proc, signal.SIGKILL)
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from None
    finally:
        if proc in cleanup.procs:
            cleanup.procs.remove(proc)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = proc_cpu_seconds(server.proc.pid)
    busy1 = machine_busy_seconds()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}\n{text}")
    raw = json.loads(line[len("WRKJSON ") :])
    if args.verbose:
        print(text.replace(line, "").rstrip())
    duration = raw["duration_us"] / 1e6
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / wall
    return RunResult(
        name=name,
        rps=raw["requests"] / duration if duration else 0.0,
        requests=raw["requests"],
        p50_ms=raw["p50"] / 1000,
        p90_ms=raw["p90"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
        non2xx=raw["status"],
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        server_cpu=(cpu1 - cpu0) / wall,
        wrk_cpu=wrk_cpu,
        other_cpu=max(0.0, (busy1 - busy0) / wall - (cpu1 - cpu0) / wall - wrk_cpu),
        raw=raw,
    )


def start_profiler(
    args: argparse.Namespace, server: Server, db: str, cleanup: Cleanup
) -> subprocess.Popen[bytes]:
    """py-spy on the server during the measured heartbeat run (``pip install py-spy``)."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    out = Path(args.profile.replace("{db}", db))
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    _, wrk_pin = pinning(args.pin)  # keep the sampler off the server's CPU
    proc = subprocess.Popen(
        [
            *wrk_pin,
            spy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--duration",
            str(max(1, int(args.seconds) - 1)),
            "--rate",
            "100",
            "--format",
            fmt,
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cleanup.procs.append(proc)
    print(f"[{db}] profiling the server with py-spy into {out} ({fmt})", flush=True)
    return proc


# --- correctness checks ---------------------------------------------------------------------------


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value  # type: ignore[no-any-return]


def stored_last_seen(database_url: str) -> dict[str, datetime | None]:
    if database_url.startswith("sqlite:"):
        path = database_url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT id, last_seen FROM backapp_agent").fetchall()
        finally:
            conn.close()
        return {str(r[0]): _aware(r[1]) for r in rows}

    async def go() -> dict[str, datetime | None]:
        import asyncpg

        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            rows = await conn.fetch("SELECT id, last_seen FROM backapp_agent")
        finally:
            await conn.close()
        return {str(r["id"]): _aware(r["last_seen"]) for r in rows}

    return asyncio.run(go())


def check_state(server: Server, fleet: Fleet, since: datetime) -> list[str]:
    """Problems found (empty when status and stored lastSeen are right)."""
    import httpx

    problems: list[str] = []
    with httpx.Client(base_url=server.url, cookies=fleet.owner_cookies, timeout=30) as http:
        agents: dict[str, dict[str, object]] = {}
        params: dict[str, object] = {"limit": 500}
        while True:  # every page: a list answers one page and the cursor of the next
            r = http.get("/api/agents", params=params)
            if r.status_code != 200:
                return [f"GET /api/agents answered {r.status_code}: {r.text[:200]}"]
            agents.update((a["id"], a) for a in r.json()["agents"])
            if not r.json()["nextAfter"]:
                break
            params["after"] = r.json()["nextAfter"]
    not_online = [i for i in fleet.ids if agents.get(i, {}).get("status") != "online"]
    if not_online:
        sample = {i: agents.get(i, {}).get("status") for i in not_online[:3]}
        problems.append(f"{len(not_online)} heartbeating agents not 'online' (e.g. {sample})")
    control = agents.get(fleet.control_id, {}).get("status")
    if control != "offline":
        problems.append(f"the control agent (no heartbeat) is {control!r}, not 'offline'")

    # The coalesced writes: every agent's stored last_seen must be newer than the run's start.
    deadline = time.monotonic() + 2 * server.flush_seconds + 3
    stale: list[str] = []
    while True:
        stored = stored_last_seen(server.database_url)
        stale = [
            i for i in fleet.ids if (stored.get(i) or datetime.min.replace(tzinfo=UTC)) < since
        ]
        if not stale or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if stale:
        problems.append(
            f"{len(stale)} agents' last_seen not written to the database within "
            f"{2 * server.flush_seconds + 3:.1f} s of the run"
        )
    if stored.get(fleet.control_id) is not None:
        problems.append("the control agent has a stored last_seen")
    return problems


# --- one database ---------------------------------------------------------------------------------


@dataclass
class DbReport:
    db: str
    baseline: RunResult
    heartbeat: RunResult
    problems: list[str]
    register_seconds: float

    @property
    def ratio(self) -> float:
        return self.heartbeat.rps / self.baseline.rps if self.baseline.rps else 0.0

    @property
    def target_met(self) -> bool:
        return self.heartbeat.rps >= TARGET_RPS and self.heartbeat.p99_ms <= TARGET_P99_MS


def bench_db(db: str, args: argparse.Namespace, cleanup: Cleanup) -> DbReport:
    work = Path(tempfile.mkdtemp(prefix=f"backapp-bench-{db}-"))
    cleanup.dirs.append(work)
    database_url: str | None = None
    if db == "postgres":
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import PostgresUnavailable, start_cluster

        print("[postgres] starting a throwaway cluster ...", flush=True)
        try:
            cluster = start_cluster()
        except PostgresUnavailable as exc:
            raise BenchError(
                f"{exc}: apt-get install postgresql (see tests/support/postgres.py)"
            ) from exc
        cleanup.clusters.append(cluster)
        database_url = cluster.create_database("backapp_bench")

    print(f"[{db}] starting backapp serve from {args.server_root} ...", flush=True)
    server = start_server(args, work, database_url, cleanup)
    print(
        f"[{db}] server pid {server.proc.pid} on {server.url}; registering {args.agents} agents ...",
        flush=True,
    )
    fleet = register_agents(server, args.agents)
    print(
        f"[{db}] registered {len(fleet.keys)} agents (+1 control) in {fleet.seconds:.1f} s",
        flush=True,
    )
    # Each agent's first heartbeat reports its version/platform (a direct UPDATE, as when a real
    # agent starts); send it once per agent before measuring the steady state.
    fleet.prime_seconds = prime_agents(server, fleet)
    print(f"[{db}] first heartbeat of every agent in {fleet.prime_seconds:.1f} s", flush=True)

    keys_file = work / "keys.txt"
    keys_file.write_text("\n".join(fleet.keys) + "\n")
    health_lua = work / "health.lua"
    health_lua.write_text(_LUA_DONE)
    hb_lua = work / "heartbeat.lua"
    hb_lua.write_text(_LUA_HEARTBEAT + _LUA_DONE)

    def run(name: str, script: Path, path: str, extra: list[str]) -> RunResult:
        if args.warmup > 0:
            run_wrk(args, server, script, path, args.warmup, name + " warm-up", extra, cleanup)
        print(f"[{db}] measuring {name} for {args.seconds:.0f} s ...", flush=True)
        spy = None
        if args.profile and script == hb_lua:
            spy = start_profiler(args, server, db, cleanup)
        try:
            best: RunResult | None = None
            for attempt in range(1 + args.noisy_retries):
                if attempt and best is not None:
                    print(
                        f"[{db}] {best.other_cpu * 100:.0f}% of a core was used by other "
                        f"processes during the run; measuring {name} again",
                        flush=True,
                    )
                    time.sleep(2)
                result = run_wrk(args, server, script, path, args.seconds, name, extra, cleanup)
                if best is None or result.other_cpu < best.other_cpu:
                    best = result
                if best.other_cpu <= NOISY_OTHER_CPU or spy is not None:
                    break
            assert best is not None
            return best
        finally:
            if spy is not None:
                try:
                    spy.wait(timeout=args.seconds + 30)
                except subprocess.TimeoutExpired:
                    stop_process(spy)

    baseline = run("GET /api/health", health_lua, "/api/health", [])
    since = datetime.now(UTC)
    heartbeat = run("POST /api/agent/heartbeat", hb_lua, "/api/agent/heartbeat", [str(keys_file)])
    problems = check_state(server, fleet, since)
    if server.proc.poll() is not None:
        problems.append(f"the server exited during the run:\n{server.log_tail()}")
    stop_process(server.proc)
    return DbReport(db, baseline, heartbeat, problems, fleet.seconds)


# --- report ---------------------------------------------------------------------------------------


def print_table(reports: list[DbReport], args: argparse.Namespace) -> None:
    print()
    print(
        f"wrk: {args.connections} connections, {args.threads} thread(s), {args.seconds:.0f} s per run, "
        f"{args.agents} agents round-robin; "
        f"{'server on CPU 0, wrk on CPU 1' if pinning(args.pin)[0] else 'no CPU pinning'}; "
        f"server from {args.server_root}"
    )
    head = (
        f"{'db':<9}{'run':<27}{'req/s':>9}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'non2xx':>8}{'sockerr':>8}{'srv CPU':>8}{'wrk CPU':>8}{'other':>7}{'ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for rep in reports:
        for res, ratio in ((rep.baseline, ""), (rep.heartbeat, f"{rep.ratio:.2f}")):
            print(
                f"{rep.db:<9}{res.name:<27}{res.rps:>9.0f}{res.p50_ms:>8.2f}{res.p90_ms:>8.2f}"
                f"{res.p99_ms:>8.2f}{res.max_ms:>8.1f}{res.non2xx:>8}{res.socket_errors:>8}"
                f"{res.server_cpu * 100:>7.0f}%{res.wrk_cpu * 100:>7.0f}%{res.other_cpu * 100:>6.0f}%"
                f"{ratio:>7}"
            )
    print(
        "srv/wrk CPU: share of one core used by the server / wrk; other: CPU used by everything "
        "else on the machine during the run (figures are unreliable when it is high)"
    )
    print()
    for rep in reports:
        hb = rep.heartbeat
        verdict = "MET" if rep.target_met else "NOT MET"
        print(
            f"[{rep.db}] target >= {TARGET_RPS:,.0f} heartbeats/s at p99 <= {TARGET_P99_MS:.0f} ms: "
            f"{verdict} ({hb.rps:,.0f}/s, p99 {hb.p99_ms:.1f} ms)"
        )
        if rep.problems:
            for p in rep.problems:
                print(f"[{rep.db}] CHECK FAILED: {p}")
        else:
            print(
                f"[{rep.db}] checks: all {args.agents} agents 'online', control agent 'offline', "
                f"last_seen flushed to the database"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (10)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds before each run (2)"
    )
    parser.add_argument("--connections", "-c", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", "-t", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--agents", type=int, default=1000, help="distinct agents (1000)")
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="re-measure a run up to N times when other processes used more than "
        f"{NOISY_OTHER_CPU * 100:.0f}%% of a core during it; the quietest run is kept (2)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin server and wrk to separate CPUs with taskset",
    )
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="path of wrk")
    parser.add_argument(
        "--server-root",
        default=str(ROOT),
        help="checkout to run the server from (PYTHONPATH/cwd), e.g. a scratch copy",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (repeatable)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="record the server with py-spy during the heartbeat run; '{db}' in PATH "
        "is replaced; .svg flamegraph, .json speedscope, else raw collapsed stacks. "
        "The sampler costs throughput: use it for where the time goes, not figures",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print wrk's own output")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 120:
        parser.error("--seconds must be in (0, 120]")
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    if not (shutil.which(args.wrk) or os.access(args.wrk, os.X_OK)):
        print(f"bench: wrk not found; {WRK_HINT}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (background)
    cleanup = Cleanup()
    reports: list[DbReport] = []
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    try:
        for db in dbs:
            reports.append(bench_db(db, args, cleanup))
            cleanup.run()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup.run()

    print_table(reports, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "db": r.db,
                        "ratio": r.ratio,
                        "target_met": r.target_met,
                        "problems": r.problems,
                        "runs": [
                            {k: v for k, v in vars(x).items()} for x in (r.baseline, r.heartbeat)
                        ],
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    bad = any(r.heartbeat.non2xx or r.baseline.non2xx or r.problems for r in reports)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
