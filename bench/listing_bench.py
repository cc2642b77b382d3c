"""How fast the restore window lists a backup of 1,000,000 files (issue 15: "listings of a 1M-file
backup open in under 2 s after the first load").

Generates (once, kept under ``--workdir``) a tree of ``--files`` tiny files: 100 folders of 100
sub-folders of ~98 files, and one folder of ``--big`` files (default 20,000). A real ``backapp
serve`` (S3 on loopback: moto in server mode) and the real ``backapp-agent`` make one snapshot of
it. Then, each in a fresh child process (an app started again), timed inside the process (the
interpreter's start and imports left out):

1. **first load**: the agent's local cache emptied, the restore window's ``RestoreSource`` lists
   the backups and opens the snapshot's top folder (the repository is opened and the folder's
   tree read from the bucket);
2. **after the first load** (the local cache warm), the same calls, then a folder of ~98 files
   five levels down, and the big folder; and the real ``RestoreWindow`` (offscreen Qt): the
   backup clicked until its top folder shows, and the big folder expanded until its rows show.

    python bench/listing_bench.py                     # 1,000,000 files (the tree and the first
                                                      # snapshot take a while on a slow disk)
    python bench/listing_bench.py --files 100000      # while iterating
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from snapshot_bench import ROOT, BackApp, Storage  # noqa: E402

TARGET_SECONDS = 2.0


def make_tree(root: Path, count: int, big: int) -> Path:
    """``count`` tiny files: ``big`` of them in ``big/``, the rest 100 x 100 folders deep."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{count} {big}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "big").mkdir(parents=True)
    for i in range(big):
        (root / "big" / f"b{i:06d}.txt").write_bytes(b"%d\n" % i)
    rest = count - big
    per = max(1, rest // 10_000)
    for i in range(rest):
        d = root / f"d{i // (per * 100) % 100:02d}" / f"e{i // per % 100:02d}"
        if i % per == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}.txt").write_bytes(b"%d\n" % i)
    marker.write_text(f"{count} {big}")
    return root


# -- the child: what the restore window does -----------------------------------------------------

CHILD = r"""
import json, os, sys, time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from desktop_agent.engine import KeyStore, config_dir, load_settings
from desktop_agent.gui._restore import RestoreSource

phase, src = sys.argv[1], sys.argv[2]
settings = load_settings()
key = KeyStore(config_dir()).load(settings.server_url.rstrip("/"))[0]
root = src.strip("/")
out = {}

def timed(name, fn):
    start = time.perf_counter()
    value = fn()
    out[name] = time.perf_counter() - start
    return value

source = RestoreSource(settings, key)
[backup] = timed("list the backups", source.backups)
rows = timed("top folder", lambda: source.folder(backup.id, ""))
out["top folder rows"] = len(rows)
if phase == "warm":
    deep = f"{root}/d50/e50"
    rows = timed("a folder 5 levels down", lambda: source.folder(backup.id, deep))
    out["a folder 5 levels down rows"] = len(rows)
    rows = timed("the big folder", lambda: source.folder(backup.id, f"{root}/big"))
    out["the big folder rows"] = len(rows)
    source.close()

    from PySide6.QtWidgets import QApplication
    from desktop_agent.gui._windows.restore import RestoreWindow

    app = QApplication([])
    window = RestoreWindow(lambda: RestoreSource(settings, key))
    window.show()

    def wait(condition, timeout=600):
        deadline = time.perf_counter() + timeout
        while not condition():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() > deadline:
                raise SystemExit("timed out")

    window.load_backups()
    wait(lambda: window.backup_items())
    start = time.perf_counter()
    window.backups.setCurrentItem(window.backup_items()[0])
    wait(lambda: window.files.topLevelItemCount() > 0)
    out["window: backup clicked to top folder shown"] = time.perf_counter() - start
    parts = root.split("/")
    for depth in range(1, len(parts) + 1):
        here = "/".join(parts[:depth])
        wait(lambda: window.find_item(here) is not None)
        item = window.find_item(here)
        window.files.expandItem(item)
    wait(lambda: window.find_item(f"{root}/big") is not None)
    big = window.find_item(f"{root}/big")
    start = time.perf_counter()
    window.files.expandItem(big)
    wait(lambda: big.childCount() > 1)
    out["window: big folder expanded until its entries show"] = time.perf_counter() - start
    out["window: big folder rows"] = big.childCount()
print(json.dumps(out))
"""


def child(phase: str, env: dict[str, str], src: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, phase, str(src)],
        env={**env, "QT_QPA_PLATFORM": "offscreen"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{phase} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="files in all (1,000,000)")
    parser.add_argument("--big", type=int, default=20_000, help="files in one folder (20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs; the best counts (3)")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "backapp-listing-bench"
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON too")
    args = parser.parse_args(argv)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"tree of {args.files:,} files ({args.big:,} in one folder) ...", flush=True)
    src = make_tree(workdir / f"tree-{args.files}", args.files, args.big)
    storage = Storage("moto", workdir)
    ours = BackApp(storage, workdir, src)
    results: dict[str, Any] = {"files": args.files, "big folder": args.big}
    try:
        print("first snapshot ...", flush=True)
        made = ours.backup()
        results["first snapshot seconds"] = round(made.seconds, 1)
        print(f"  {made.seconds:.1f} s, peak RSS {made.rss_mib:.0f} MiB", flush=True)
        shutil.rmtree(workdir / "agent-cache", ignore_errors=True)
        cold = child("cold", ours.env, src)
        results["first load"] = cold
        warm: dict[str, float] = {}
        for _ in range(args.repeat):
            for name, value in child("warm", ours.env, src).items():
                best = warm.get(name)
                warm[name] = value if best is None or "rows" in name else min(best, value)
        results[f"after the first load (best of {args.repeat})"] = warm
    finally:
        ours.stop()
        storage.stop()
    load = os.getloadavg()[0]
    results["load average"] = round(load, 1)
    print(f"\n{args.files:,} files; load average {load:.1f}")
    for section in ("first load", f"after the first load (best of {args.repeat})"):
        print(section)
        for name, value in results[section].items():
            if "rows" in name:
                print(f"  {name:48} {value:>10,}")
            else:
                flag = "" if value < TARGET_SECONDS else f"  (over {TARGET_SECONDS:g} s)"
                print(f"  {name:48} {value:>9.3f} s{flag}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
