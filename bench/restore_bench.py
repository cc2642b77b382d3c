"""Benchmark of the agent's restore (GET -> SHA-256 -> decompress -> untar into staging -> verify ->
move into place) beside ``curl URL | tar -xz`` of the same object, in the same run.

Two generated trees (fixed seed): many small files and a few large files, half word-like text, half
random bytes. Each is archived once with ``tar -czf`` (and ``tar | zstd``); the archive is served by
a loopback HTTP server (a separate process, honouring ``Range``). On each archive, interleaved:

- ``curl -s URL | tar -xzf - -C DIR``  (resp. ``| zstd -d | tar -xf -``): no verification at all
- ``Restorer.restore``: the agent's restore, in a child process whose peak RSS is measured

    python bench/restore_bench.py                       # default run: a couple of minutes
    python bench/restore_bench.py --small 50000 --large-mib 512 --repeat 3

Throughput is bytes of file content per second of wall time; the ratio is agent / curl|tar time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
SEED = 20250107


# -- trees and archives -------------------------------------------------------------------------------


def _content(rng: random.Random, words: list[bytes], size: int) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(size)
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=200)) + b"\n"
    return bytes(out[:size])


def make_tree(root: Path, small: int, large: int, large_size: int) -> Path:
    if root.exists():
        return root
    rng = random.Random(SEED)
    words = [rng.randbytes(rng.randint(1, 5)).hex().encode() for _ in range(5000)]
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(small):
        path = tmp / f"d{i // 500:03d}" / f"file-{i:06d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(rng, words, rng.randint(64, 16 * 1024)))
    for i in range(large):
        path = tmp / f"large-{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for _ in range(large_size // MIB):
                fh.write(_content(rng, words, MIB))
    tmp.rename(root)
    return root


def tree_bytes(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


# -- the object server --------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    directory = "."

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = os.path.join(self.directory, os.path.basename(self.path.split("?")[0]))
        size = os.path.getsize(path)
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(path, "rb") as fh:
            fh.seek(start)
            while block := fh.read(MIB):
                self.wfile.write(block)

    def log_message(self, *args: Any) -> None:
        pass


def serve(directory: str) -> None:
    _Handler.directory = directory
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# -- the agent, in a child process --------------------------------------------------------------------


def run_child(url: str, filename: str, target: str) -> None:
    from desktop_agent.engine import BackupInfo, RestoreOptions, Restorer, RestoreTicket

    size, sha = int(os.environ["BENCH_SIZE"]), os.environ["BENCH_SHA256"]

    class Source:
        def list_backups(self, **kw: Any) -> list[BackupInfo]:
            return []

        def restore_ticket(self, backup_id: str) -> RestoreTicket:
            return RestoreTicket(
                backup_id=backup_id, url=url, size=size, sha256=sha, filename=filename
            )

    t0 = time.perf_counter()
    with Restorer(Source()) as restorer:
        result = restorer.restore("bench", RestoreOptions(target=Path(target)))
    print(f"{time.perf_counter() - t0:.3f} {result.files} {result.bytes}", flush=True)


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB), CPU seconds (user + system, children included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed")
    return seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def bench(
    name: str, tree: Path, archive: Path, port: int, scratch: Path, repeat: int
) -> list[dict[str, Any]]:
    files, total = tree_bytes(tree)
    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    url = f"http://127.0.0.1:{port}/{archive.name}?X-Amz-Signature=bench"
    zst = archive.name.endswith(".zst")
    untar = "zstd -d -q | tar -xf -" if zst else "tar -xzf -"
    print(
        f"\n== {name}: {files:,} files, {total / MIB:,.0f} MiB; {archive.name} "
        f"{archive.stat().st_size / MIB:,.1f} MiB (best of {repeat}) ==",
        flush=True,
    )
    best: dict[str, tuple[float, int, float]] = {}
    for _ in range(repeat):
        for who in ("curl | tar", "agent"):
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            if who == "agent":
                env = {
                    **os.environ,
                    "BENCH_SIZE": str(archive.stat().st_size),
                    "BENCH_SHA256": digest.hexdigest(),
                }
                cmd = [sys.executable, __file__, "--child", url, archive.name, str(out)]
                got = measure(cmd, env)
            else:
                out.mkdir()
                got = measure(["bash", "-c", f"curl -sf '{url}' | {untar} -C '{out}'"])
            if who not in best or got[0] < best[who][0]:
                best[who] = got
            restored, restored_bytes = tree_bytes(out)
            assert (restored, restored_bytes) == (files, total), (who, restored, restored_bytes)
    shutil.rmtree(scratch / "out", ignore_errors=True)
    rows = []
    for who, (secs, rss, cpu) in best.items():
        rate = total / secs / MIB
        print(
            f"  {who:12} {secs:7.2f} s  {rate:8.1f} MiB/s  cpu {cpu:6.2f} s  "
            f"peak RSS {rss / 1024:6.0f} MiB"
        )
        rows.append({"tree": name, "who": who, "seconds": secs, "rss_kib": rss, "cpu": cpu})
    ratio = best["agent"][0] / best["curl | tar"][0]
    print(f"  ratio agent / curl|tar: {ratio:.2f}x the time")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20_000, help="small files (default 20,000)")
    parser.add_argument("--large", type=int, default=2, help="large files (default 2)")
    parser.add_argument("--large-mib", type=int, default=256, help="MiB per large file")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--zstd", action="store_true", help="also the .tar.zst archives")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "backapp-restore-bench"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(*args.child)
        return 0
    if args.serve:
        serve(args.serve)
        return 0

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    trees = {
        "small files": make_tree(work / f"small-{args.small}", args.small, 0, 0),
        "large files": make_tree(
            work / f"large-{args.large}x{args.large_mib}", 0, args.large, args.large_mib * MIB
        ),
    }
    archives = work / "archives"
    archives.mkdir(exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(archives)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for name, tree in trees.items():
            kinds = [("tar.gz", "tar -czf {a} -C {t} .")]
            if args.zstd:
                kinds.append(("tar.zst", "tar -cf - -C {t} . | zstd -3 -q -o {a}"))
            for ext, make in kinds:
                archive = archives / f"{tree.name}.{ext}"
                if not archive.exists():
                    subprocess.run(["bash", "-c", make.format(a=archive, t=tree)], check=True)
                bench(name, tree, archive, port, work, args.repeat)
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
