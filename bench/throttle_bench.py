"""Bandwidth limits: does a limit of N Mbit/s hold, over ~30 s, for uploads and downloads, with
several transfers at once? Beside restic's ``--limit-upload`` / ``--limit-download`` on the same S3
endpoint in the same run.

    python bench/throttle_bench.py                   # 20 Mbit/s for ~30 s each way, moto
    python bench/throttle_bench.py --mbit 50 --seconds 60 --storage seaweedfs

BackApp: the agent's storage client (``HttpStorage`` with ``limitUpload`` / ``limitDownload``)
moves incompressible objects through pre-signed URLs, four at a time sharing one limit; the rate is
the bytes moved over the wall time of the transfers. restic: ``restic backup`` and ``restic
restore`` of one incompressible file of the same size; its rate is the file's size over the whole
command's wall time (its start and index writes included, so it reads a little low). The target
(issue: bandwidth limits) is a measured rate within 10 % of the limit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from snapshot_bench import Restic, Storage, measure

from desktop_agent.engine import HttpStorage, Throttle

PARALLEL = 4


def backapp(storage: Storage, mbit: float, size: int) -> tuple[float, float]:
    """(upload, download) rates in Mbit/s."""
    bucket = storage.bucket("throttle-bench")
    s3 = storage.client()
    piece = size // PARALLEL
    bodies = [os.urandom(piece) for _ in range(PARALLEL)]
    keys = [f"obj-{i}" for i in range(PARALLEL)]
    puts = [
        s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=3600)
        for k in keys
    ]
    gets = [
        s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=3600)
        for k in keys
    ]
    with (
        HttpStorage(
            upload_limit=Throttle.from_mbps(mbit), download_limit=Throttle.from_mbps(mbit)
        ) as client,
        ThreadPoolExecutor(PARALLEL) as pool,
    ):
        t0 = time.monotonic()
        list(pool.map(lambda i: client.put(puts[i], bodies[i], {}), range(PARALLEL)))
        up = time.monotonic() - t0
        t0 = time.monotonic()
        got = list(pool.map(lambda i: client.get_object(gets[i]), range(PARALLEL)))
        down = time.monotonic() - t0
    assert got == bodies, "a download differs from what was uploaded"
    moved = piece * PARALLEL * 8 / 1e6
    return moved / up, moved / down


def restic(storage: Storage, workdir: Path, mbit: float, size: int) -> tuple[float, float]:
    src = workdir / "restic-src"
    src.mkdir()
    (src / "blob.bin").write_bytes(os.urandom(size))
    tool = Restic(storage, workdir, src)
    kib = str(int(mbit * 1e6 / 8 / 1024))
    up = measure(["restic", "backup", "--quiet", "--limit-upload", kib, str(src)], tool.env)
    target = workdir / "restic-restore"
    down = measure(
        ["restic", "restore", "latest", "--target", str(target), "--limit-download", kib],
        tool.env,
    )
    moved = size * 8 / 1e6
    return moved / up.seconds, moved / down.seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbit", type=float, default=20, help="the limit (default 20 Mbit/s)")
    parser.add_argument("--seconds", type=float, default=30, help="transfer length (default 30)")
    parser.add_argument("--storage", choices=("moto", "seaweedfs"), default="moto")
    args = parser.parse_args(argv)
    size = int(args.mbit * 1e6 / 8 * args.seconds)
    workdir = Path(tempfile.mkdtemp(prefix="backapp-throttle-bench-"))
    storage = Storage(args.storage, workdir)
    try:
        ours = backapp(storage, args.mbit, size)
        theirs = restic(storage, workdir, args.mbit, size) if shutil.which("restic") else None
    finally:
        storage.proc.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"limit {args.mbit:g} Mbit/s, {size / 1e6:.0f} MB each way, {args.storage}, "
        f"{os.cpu_count()} cores"
    )
    print("| direction | BackApp | of the limit | restic | of the limit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for i, direction in enumerate(("upload", "download")):
        rate = ours[i]
        row = f"| {direction} | {rate:.2f} Mbit/s | {rate / args.mbit:.2f}x |"
        if theirs is not None:
            row += f" {theirs[i]:.2f} Mbit/s | {theirs[i] / args.mbit:.2f}x |"
        else:
            row += " (restic not installed) | |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
