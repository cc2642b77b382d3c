"""Incremental backups (snapshots) side by side with restic, on the same S3 endpoint and trees.

Generates (fixed seed) a "laptop home" tree: ~30,000 small text and code files, a few hundred
photo-like random files, a few 200 MB files (half compressible). Then, in one run, for BackApp
(``backapp serve`` + the real ``backapp-agent``) and restic (``apt-get install restic``), each
against its own bucket of the same S3 endpoint on loopback (moto in server mode, or SeaweedFS with
``--storage seaweedfs``):

1. first snapshot of the tree;
2. 1 % of the files changed and 20 MB of new files, then a second snapshot;
3. bytes stored after 2 snapshots (the sum of the objects in each bucket);
4. a full restore of the second snapshot, and a restore of one file;
5. with ``--runs N`` (default 10), more small changes and snapshots up to N, and the bytes stored;
6. with ``--million``: the first snapshot of a tree of 1,000,000 tiny files (peak RSS).

Every command runs as a child process whose wall time and peak RSS (``wait4``) are taken. The
machine may be shared: read the ratios (BackApp / restic, lower is better) rather than the seconds.

    python bench/snapshot_bench.py                  # ~2 GB tree, 10 snapshots; several minutes
    python bench/snapshot_bench.py --quick          # ~200 MB tree, 3 snapshots
    python bench/snapshot_bench.py --size-mb 2000 --storage seaweedfs --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MB = 1000 * 1000
MIB = 1024 * 1024
SEED = 20261201
ACCESS_KEY, SECRET_KEY = "benchkey", "benchsecret"


# -- the trees ---------------------------------------------------------------------------------


def _words(rng: random.Random) -> list[bytes]:
    letters = b"abcdefghijklmnopqrstuvwxyz_"
    return [bytes(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(6000)]


def _text(rng: random.Random, words: list[bytes], size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        line = b" ".join(rng.choices(words, k=rng.randint(3, 14)))
        out += b"    " * rng.randint(0, 3) + line + b"\n"
    return bytes(out[:size])


def make_home(root: Path, size: int) -> Path:
    """A tree of about ``size`` bytes: 10 % small text and code files (30,000 for 2 GB), 25 %
    random "photos" (200 KB - 4 MB), 40 % in a few 200 MB files (half text, half random), the rest
    medium documents."""
    done = root / ".complete"
    if done.exists() and done.read_text() == str(size):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(SEED)
    words = _words(rng)
    block = _text(rng, words, 4 * MIB)
    scale = size / (2000 * MB)
    small = max(300, int(30_000 * scale))
    for i in range(small):
        d = root / "code" / f"project{i // 3000:02d}" / f"pkg{i // 100 % 30:02d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        n = int(2 ** rng.uniform(8, 13.6))  # 256 B .. 12 KB, ~6.7 KB on average
        start = rng.randrange(0, len(block) - n)
        (d / f"file{i:05d}.{rng.choice(['py', 'md', 'txt', 'js', 'c'])}").write_bytes(
            block[start : start + n]
        )
    photos_left = int(0.25 * size)
    i = 0
    while photos_left > 0:
        d = root / "Pictures" / f"{2015 + i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        n = min(photos_left, rng.randint(200_000, 4 * MB))
        (d / f"IMG_{i:05d}.jpg").write_bytes(rng.randbytes(n))
        photos_left -= n
        i += 1
    big = max(1, round(0.4 * size / (200 * MB)))
    big_size = int(0.4 * size / big)
    (root / "VMs").mkdir(parents=True, exist_ok=True)
    for j in range(big):
        with open(root / "VMs" / f"disk{j}.img", "wb") as fh:
            left = big_size
            k = 0
            while left:
                n = min(left, 4 * MIB)
                fh.write(block[:n] if k % 2 == 0 else rng.randbytes(n))
                left -= n
                k += 1
    docs_left = size - sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    i = 0
    while docs_left > 0:
        d = root / "Documents" / f"folder{i // 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        n = min(docs_left, rng.randint(50_000, 2 * MB))
        start = rng.randrange(0, len(block) - min(n, len(block) - 1))
        data = (block[start:] + block)[:n] if rng.random() < 0.7 else rng.randbytes(n)
        (d / f"doc{i:05d}.{rng.choice(['pdf', 'docx', 'xlsx', 'odt'])}").write_bytes(data)
        docs_left -= n
        i += 1
    done.write_text(str(size))
    return root


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".complete")


def change(root: Path, step: int, *, share: float = 0.01, new_bytes: int = 20 * MB) -> None:
    """Change ``share`` of the files (a few bytes in the middle, or appended) and add ``new_bytes``
    of new files (half text)."""
    rng = random.Random(SEED + step)
    files = files_of(root)
    for path in rng.sample(files, max(1, int(len(files) * share))):
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            if size > 64 and rng.random() < 0.5:
                fh.seek(rng.randrange(0, size - 32))
                fh.write(rng.randbytes(32))
            else:
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n# changed in step %d\n" % step)
    new = root / "Downloads" / f"step{step}"
    new.mkdir(parents=True, exist_ok=True)
    words = _words(rng)
    left, i = new_bytes, 0
    while left > 0:
        n = min(left, rng.randint(100_000, 5 * MB))
        data = _text(rng, words, n) if i % 2 else rng.randbytes(n)
        (new / f"new{i:03d}.bin").write_bytes(data)
        left -= n
        i += 1


def make_million(root: Path, count: int) -> Path:
    done = root / ".complete"
    if done.exists() and done.read_text() == str(count):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        d = root / f"d{i // 10000:03d}" / f"e{i // 100 % 100:02d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}").write_bytes(b"%d\n" % i)
    done.write_text(str(count))
    return root


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    rss_mib: float
    stdout: str = ""
    stderr: str = ""


def measure(cmd: Sequence[str], env: dict[str, str], *, cwd: Path | None = None) -> Measured:
    """Run ``cmd`` to its end; its wall time and peak RSS (its own, from ``wait4``)."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=err, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    m = Measured(seconds, usage.ru_maxrss / 1024, out.read().decode(), err.read().decode())
    if proc.returncode != 0:
        raise SystemExit(
            f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} failed:\n{m.stderr[-4000:]}\n{m.stdout[-2000:]}"
        )
    return m


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


class Storage:
    """An S3 endpoint on loopback: moto (server mode) or SeaweedFS (``weed``)."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if kind == "moto":
            cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        else:
            weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
            data = workdir / "weed"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            config = workdir / "weed-s3.json"
            config.write_text(
                json.dumps(
                    {
                        "identities": [
                            {
                                "name": "bench",
                                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                            }
                        ]
                    }
                )
            )
            cmd = [weed, "mini", f"-dir={data}", f"-s3.port={self.port}", f"-s3.config={config}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stored(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) in ``bucket``."""
        count = total = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                count += 1
                total += obj["Size"]
        return count, total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


# -- the contenders ------------------------------------------------------------------------------


class BackApp:
    def __init__(self, storage: Storage, workdir: Path, src: Path) -> None:
        import httpx

        self.workdir = workdir
        self.bucket = storage.bucket("backapp-bench")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKAPP_", "AWS_"))}
        shutil.rmtree(workdir / "server", ignore_errors=True)
        self.server_env = {
            **base,
            "BACKAPP_DATA_DIR": str(workdir / "server"),
            "BACKAPP_PORT": str(port),
            "BACKAPP_SECRET_KEY": "bench-secret-0123456789abcdef0123456789abcdef",
            "AWS_S3_BUCKET": self.bucket,
            "AWS_S3_ENDPOINT": storage.url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        self.server = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--no-access-log"],
            env=self.server_env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "server.log", "wb"),  # noqa: SIM115
        )
        wait_http(self.url + "/api/health")
        http = httpx.Client(base_url=self.url)
        r = http.post(
            "/api/auth/signup", json={"email": "bench@example.com", "password": "a long passphrase"}
        )
        r.raise_for_status()
        csrf = {"x-csrftoken": http.cookies["csrftoken"]}
        r = http.post(
            "/api/agent/register", json={"name": "bench", "platform": "linux"}, headers=csrf
        )
        agent = r.json()["agent"]
        r = http.post(
            "/api/configs",
            json={
                "name": "Home",
                "executionMode": "agent",
                "agentId": agent["id"],
                "sources": [{"path": str(src)}],
                "options": {"type": "incremental"},
            },
            headers=csrf,
        )
        r.raise_for_status()
        for d in ("agent-config", "agent-cache", "agent-tmp"):
            shutil.rmtree(workdir / d, ignore_errors=True)
        self.env = {
            **base,
            "BACKAPP_AGENT_CONFIG_DIR": str(workdir / "agent-config"),
            "BACKAPP_AGENT_TEMP_DIR": str(workdir / "agent-tmp"),
            "BACKAPP_CACHE_DIR": str(workdir / "agent-cache"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        }
        subprocess.run(
            [*self.agent(), "configure", "--server", self.url, "--api-key-stdin"],
            input=agent["apiKey"] + "\n",
            text=True,
            env=self.env,
            check=True,
            capture_output=True,
        )

    profile_dir: Path | None = None
    """With ``--profile DIR``: each agent command writes a cProfile file there (slower)."""
    program: str | None = None
    """With ``--agent PATH``: that agent program (e.g. the frozen build) instead of the sources."""
    _profiled = 0

    def agent(self, what: str = "cmd") -> list[str]:
        if self.profile_dir is not None:
            BackApp._profiled += 1
            out = self.profile_dir / f"{BackApp._profiled:02d}-{what}.prof"
            return [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "desktop_agent"]
        exe = BackApp.program or shutil.which("backapp-agent")
        return [exe] if exe else [sys.executable, "-m", "desktop_agent"]

    def backup(self) -> Measured:
        m = measure([*self.agent("run"), "run", "--json"], self.env)
        self.last = [json.loads(x) for x in m.stdout.splitlines() if x.startswith("{")]
        finished = [e for e in self.last if e["event"] == "backup_finished"]
        if not finished:
            raise SystemExit(f"BackApp backup failed:\n{m.stdout[-3000:]}\n{m.stderr[-3000:]}")
        self.latest = finished[-1]["logId"]
        return m

    def restore(self, target: Path, path: str | None = None) -> Measured:
        args = [*self.agent("restore"), "restore", self.latest, "--to", str(target), "--json"]
        if path:
            args += ["--path", path]
        return measure(args, self.env)

    def stop(self) -> None:
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(30)


class Restic:
    def __init__(self, storage: Storage, workdir: Path, src: Path) -> None:
        self.src = src
        bucket = storage.bucket("restic-bench")
        self.env = {
            **os.environ,
            "RESTIC_REPOSITORY": f"s3:{storage.url}/{bucket}",
            "RESTIC_PASSWORD": "bench password",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "RESTIC_CACHE_DIR": str(workdir / "restic-cache"),
        }
        shutil.rmtree(workdir / "restic-cache", ignore_errors=True)
        measure(["restic", "init"], self.env)
        self.bucket = bucket

    def backup(self) -> Measured:
        return measure(["restic", "backup", "--quiet", str(self.src)], self.env)

    def restore(self, target: Path, path: str | None = None) -> Measured:
        args = ["restic", "restore", "latest", "--target", str(target)]
        if path:
            args += ["--include", path]
        return measure(args, self.env)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    ours: float
    theirs: float
    unit: str
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs if self.theirs else float("nan")


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, ours: float, theirs: float, unit: str, target: str = "") -> None:
        self.rows.append(Row(what, ours, theirs, unit, target))
        r = self.rows[-1]
        print(
            f"  {what}: BackApp {ours:.2f} {unit}, restic {theirs:.2f} {unit}: {r.ratio:.2f}x",
            flush=True,
        )

    def table(self) -> str:
        lines = [
            "| measure | BackApp | restic | ratio | target |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.what} | {r.ours:,.2f} {r.unit} | {r.theirs:,.2f} {r.unit} | "
                f"{r.ratio:.2f}x | {r.target} |"
            )
        return "\n".join(lines)


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def run(args: argparse.Namespace) -> Report:
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed: apt-get install restic")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    size = int(args.size_mb * MB)
    report = Report()
    print(f"tree of ~{size / MB:,.0f} MB in {workdir / 'home'} ...", flush=True)
    if (workdir / "home" / "Downloads").exists():
        shutil.rmtree(workdir / "home")  # an earlier run changed it: start from the same tree
    src = make_home(workdir / "home", size)
    n_files = len(files_of(src))
    storage = Storage(args.storage, workdir)
    ours = theirs = None
    try:
        ours = BackApp(storage, workdir, src)
        theirs = Restic(storage, workdir, src)
        report.notes.append(
            f"tree: {n_files:,} files, {sum(p.stat().st_size for p in files_of(src)) / MB:,.0f} MB; "
            f"storage: {args.storage} on loopback; {os.cpu_count()} cores"
        )
        a, b = ours.backup(), theirs.backup()
        report.add("first snapshot, wall", a.seconds, b.seconds, "s", "≤ 1.0x (aim 0.6x)")
        report.add("first snapshot, peak RSS", a.rss_mib, b.rss_mib, "MiB", "≤ 200 MiB")
        change(src, 1)
        a, b = ours.backup(), theirs.backup()
        report.add(
            "second snapshot (1 % changed, +20 MB), wall", a.seconds, b.seconds, "s", "≤ 1.0x"
        )
        report.add("second snapshot, peak RSS", a.rss_mib, b.rss_mib, "MiB", "≤ 200 MiB")
        _, ob = storage.stored(ours.bucket)
        _, tb = storage.stored(theirs.bucket)
        report.add("bytes stored after 2 snapshots", ob / MB, tb / MB, "MB", "≤ 1.05x")
        a = ours.restore(fresh(workdir / "restore-ours"))
        b = theirs.restore(fresh(workdir / "restore-restic"))
        report.add("full restore, wall", a.seconds, b.seconds, "s", "≤ 0.7x")
        report.add("full restore, peak RSS", a.rss_mib, b.rss_mib, "MiB", "")
        one = files_of(src)[n_files // 2]
        a = ours.restore(fresh(workdir / "one-ours"), str(one))
        b = theirs.restore(fresh(workdir / "one-restic"), str(one))
        report.add("one file from the snapshot, wall", a.seconds, b.seconds, "s", "≤ 1.0x")
        finished = [json.loads(x) for x in a.stdout.splitlines() if '"restore_finished"' in x]
        downloaded = finished[-1]["archiveSize"] if finished else 0
        report.notes.append(
            f"one-file restore ({one.stat().st_size / 1000:.1f} kB) downloaded "
            f"{downloaded / 1000:.1f} kB = {100 * downloaded / ob:.3f} % of the repository "
            "(target < 5 %)"
        )
        for step in range(3, args.runs + 1):
            change(src, step, share=0.002, new_bytes=5 * MB)
            ours.backup()
            theirs.backup()
        if args.runs > 2:
            _, ob = storage.stored(ours.bucket)
            _, tb = storage.stored(theirs.bucket)
            report.add(
                f"bytes stored after {args.runs} snapshots", ob / MB, tb / MB, "MB", "≤ 1.05x"
            )
    finally:
        if ours is not None:
            ours.stop()
        storage.stop()
    if args.million:
        report.notes.extend(million(workdir, args))
    return report


def million(workdir: Path, args: argparse.Namespace) -> list[str]:
    print(f"tree of {args.million:,} tiny files ...", flush=True)
    src = make_million(workdir / "million", args.million)
    storage = Storage(args.storage, workdir)
    ours = BackApp(storage, workdir, src)
    try:
        theirs = Restic(storage, workdir, src)
        a, b = ours.backup(), theirs.backup()
    finally:
        ours.stop()
        storage.stop()
    line = (
        f"{args.million:,} files, first snapshot: BackApp {a.seconds:.1f} s, peak RSS "
        f"{a.rss_mib:.0f} MiB; restic {b.seconds:.1f} s, {b.rss_mib:.0f} MiB"
    )
    print("  " + line)
    return [line]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=2000, help="tree size (default 2000)")
    parser.add_argument("--runs", type=int, default=10, help="snapshots in all (default 10)")
    parser.add_argument("--storage", choices=("moto", "seaweedfs"), default="moto")
    parser.add_argument(
        "--workdir", default=str(Path(tempfile.gettempdir()) / "backapp-snapshot-bench")
    )
    parser.add_argument("--million", type=int, default=0, metavar="N", help="also N tiny files")
    parser.add_argument("--quick", action="store_true", help="~200 MB, 3 snapshots")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON too")
    parser.add_argument(
        "--profile", metavar="DIR", help="profile each agent command (cProfile files in DIR)"
    )
    parser.add_argument(
        "--agent",
        metavar="PATH",
        help="run this agent program (e.g. dist/backapp-agent, the frozen build) instead of the sources",
    )
    args = parser.parse_args(argv)
    if args.agent:
        BackApp.program = str(Path(args.agent).resolve())
    if args.profile:
        BackApp.profile_dir = Path(args.profile)
        BackApp.profile_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.size_mb, args.runs = min(args.size_mb, 200), min(args.runs, 3)
    # Byte-compiled as an installed package is, so that no command pays for compiling the sources
    # (PYTHONDONTWRITEBYTECODE would otherwise make every command compile them again).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            str(ROOT / "desktop_agent"),
            str(ROOT / "backend"),
        ],
        check=True,
    )
    report = run(args)
    print()
    print(report.table())
    for note in report.notes:
        print(f"- {note}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": [r.__dict__ | {"ratio": r.ratio} for r in report.rows],
                    "notes": report.notes,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
