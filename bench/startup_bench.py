"""What a short ``backapp-agent`` command pays before its work: imports and the interpreter's start.

Compares this source tree with another one (``--base``, e.g. a ``git worktree`` of main), each
measure taken ``--runs`` times, the two trees alternating, medians printed as a Markdown table:

- ``python -X importtime -c "import desktop_agent.cli"`` (and ``desktop_agent.cli.restore``): the
  sum of the top-level imports' cumulative times, minus that of ``python -c pass``;
- the wall time of ``python -m desktop_agent --help``, ``restore --help``, ``ls --help``;
- with ``--restore``: the wall time of restoring one file (``restore ID --to DIR --path FILE``) from
  one snapshot of a small generated tree, with ``backapp serve`` and moto on loopback (the pieces
  of ``snapshot_bench.py``; the server runs from this tree).

Each command runs from the tree's root with ``python -m``, so that tree's packages are imported.
The sources are byte-compiled first, as an installed package is.

    python bench/startup_bench.py --base ../main                     # imports and --help only
    python bench/startup_bench.py --base ../main --restore --size-mb 20 --runs 11
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
#: A top-level line of ``-X importtime``: no indentation before the module's name.
TOP_LEVEL = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| \S")


def _imports_total(tree: Path, code: str) -> float:
    err = subprocess.run(
        [PY, "-X", "importtime", "-c", code], cwd=tree, capture_output=True, text=True, env=ENV
    ).stderr
    return sum(int(m.group(1)) for m in map(TOP_LEVEL.match, err.splitlines()) if m) / 1e6


def import_seconds(statement: str) -> Callable[[Path], float]:
    def measure(tree: Path) -> float:
        return _imports_total(tree, statement) - _imports_total(tree, "pass")

    return measure


def wall_seconds(*args: str) -> Callable[[Path], float]:
    def measure(tree: Path) -> float:
        t0 = time.perf_counter()
        subprocess.run([PY, *args], cwd=tree, capture_output=True, env=ENV, check=True)
        return time.perf_counter() - t0

    return measure


def compare(label: str, measure: Callable[[Path], float], trees: dict[str, Path], runs: int) -> str:
    """One table row: the medians of ``runs`` alternating measures of each tree."""
    times: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(runs):
        for name in list(trees) if i % 2 == 0 else list(reversed(trees)):
            times[name].append(measure(trees[name]))
    medians = [statistics.median(v) for v in times.values()]
    cells = " | ".join(f"{m * 1000:.0f} ms" for m in medians)
    ratio = f" | {medians[-1] / medians[0]:.2f}x" if len(medians) == 2 else ""
    return f"| {label} | {cells}{ratio} |"


def restore_rows(trees: dict[str, Path], runs: int, size_mb: float) -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    import snapshot_bench as sb

    work = Path(tempfile.mkdtemp(prefix="backapp-startup-bench-"))
    src = sb.make_home(work / "home", int(size_mb * sb.MB))
    files = sb.files_of(src)
    one = str(files[len(files) // 2])
    storage = sb.Storage("moto", work)
    ours = sb.BackApp(storage, work, src)
    try:
        ours.backup()
        count = 0

        def restore(tree: Path) -> float:
            nonlocal count
            count += 1
            target = sb.fresh(work / f"one-{count}")
            args = ["restore", ours.latest, "--to", str(target), "--json", "--path", one]
            return sb.measure([PY, "-m", "desktop_agent", *args], ours.env, cwd=tree).seconds

        label = f"one-file restore ({len(files):,}-file tree, moto), wall"
        return [compare(label, restore, trees, runs)]
    finally:
        ours.stop()
        storage.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another source tree to compare with")
    parser.add_argument("--runs", type=int, default=9, help="measures per tree (default 9)")
    parser.add_argument("--restore", action="store_true", help="also a one-file restore")
    parser.add_argument("--size-mb", type=float, default=20, help="--restore's tree (default 20)")
    args = parser.parse_args(argv)
    trees = {"base": args.base.resolve(), "this tree": ROOT} if args.base else {"this tree": ROOT}
    for tree in trees.values():
        subprocess.run([PY, "-m", "compileall", "-q", "desktop_agent"], cwd=tree, check=True)
    header = " | ".join(trees)
    print(f"| measure | {header} |" + (" ratio |" if len(trees) == 2 else ""))
    print("| --- |" + " ---: |" * (len(trees) + (len(trees) == 2)))
    rows: list[tuple[str, Callable[[Path], float]]] = [
        ("`import desktop_agent.cli` (-X importtime)", import_seconds("import desktop_agent.cli")),
        ("`python -m desktop_agent --help`, wall", wall_seconds("-m", "desktop_agent", "--help")),
        ("`restore --help`, wall", wall_seconds("-m", "desktop_agent", "restore", "--help")),
        ("`ls --help`, wall", wall_seconds("-m", "desktop_agent", "ls", "--help")),
        (
            "`import desktop_agent.cli.restore` (-X importtime)",
            import_seconds("import desktop_agent.cli.restore"),
        ),
        ("`python -c pass`, wall", wall_seconds("-c", "pass")),
    ]
    for label, measure in rows:
        print(compare(label, measure, trees, args.runs), flush=True)
    if args.restore:
        for row in restore_rows(trees, args.runs, args.size_mb):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
