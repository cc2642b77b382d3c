"""Build BackApp's installable programs with PyInstaller.

    python packaging/build.py                 # everything this platform can build, into dist/
    python packaging/build.py backapp-agent   # only the headless agent: dist/backapp-agent(.exe)
    python packaging/build.py backapp-tray    # only the tray app
    python packaging/build.py backapp-agent --version 1.2.4   # a build that says it is 1.2.4

Targets:

* ``backapp-agent``: the headless agent as one self-contained file (no Qt), on every platform.
* ``backapp-tray``: the tray app. Linux: ``dist/backapp-tray/`` (a folder; run ``backapp-tray`` in it)
  and ``dist/backapp-tray-<version>-linux-<arch>.tar.gz``; Windows: ``dist/backapp-tray/`` and a
  ``.zip``; macOS: ``dist/BackApp.app`` (menu bar only, ``LSUIElement``) and a ``.zip``.

Each build is checked after it is made (``--version`` must print the version it was built as) and
its size and build time are printed. ``--version`` builds another version than ``pyproject.toml``'s
(a release to publish with ``backapp agent-release``, or two builds to test an update): the frozen
program carries it in a data file and ``desktop_agent.__version__`` reads it from there.
PyInstaller cannot cross-compile: macOS and Windows builds are made on those systems
(``.github/workflows/build.yml``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
TARGETS = ("backapp-agent", "backapp-tray")


#: Passed to the specs (``_common.version``): the version to build.
VERSION_ENV = "BACKAPP_BUILD_VERSION"


def package_version() -> str:
    """The version being built: ``--version``'s (through ``VERSION_ENV``), else the package's."""
    override = os.environ.get(VERSION_ENV, "").strip()
    if override:
        return override
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def checked_version(text: str) -> str:
    """``--version``'s argument: a PEP 440 version, as agents compare them."""
    from packaging.version import InvalidVersion, Version

    try:
        Version(text)
    except InvalidVersion as exc:
        raise argparse.ArgumentTypeError(f"not a version: {text!r}") from exc
    if text != text.strip() or not text:
        raise argparse.ArgumentTypeError(f"not a version: {text!r}")
    return text


def platform_tag() -> str:
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, "linux")
    machine = platform.machine().lower() or "unknown"
    machine = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


def exe_name(name: str) -> str:
    return f"{name}.exe" if sys.platform == "win32" else name


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def run_pyinstaller(spec: str, dist: Path, work: Path, clean: bool) -> None:
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level",
        "WARN",
        "--distpath",
        str(dist),
        "--workpath",
        str(work),
        str(PACKAGING / spec),
    ]
    if clean:
        command.insert(3, "--clean")
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def check_version(program: Path, name: str) -> None:
    """The frozen program must start and print the package version."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    done = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, env=env, timeout=120
    )
    expected = f"{name} {package_version()}"
    if sys.platform == "win32" and name == "backapp-tray" and done.returncode == 0:
        return  # a windowed (GUI-subsystem) program may have no stdout to print to
    if done.returncode != 0 or done.stdout.strip() != expected:
        raise SystemExit(
            f"{program} --version: exit {done.returncode}, printed {done.stdout!r} "
            f"(expected {expected!r}); stderr:\n{done.stderr}"
        )


def archive(folder: Path, dist: Path, stem: str) -> Path:
    """A download for the tray app: ``.tar.gz`` on Linux (keeps permissions and links), ``.zip``
    elsewhere (``ditto`` on macOS keeps the bundle's symlinks and signature)."""
    if sys.platform == "darwin":
        target = dist / f"{stem}.zip"
        target.unlink(missing_ok=True)
        subprocess.run(["ditto", "-c", "-k", "--keepParent", str(folder), str(target)], check=True)
        return target
    fmt = "zip" if sys.platform == "win32" else "gztar"
    return Path(shutil.make_archive(str(dist / stem), fmt, root_dir=dist, base_dir=folder.name))


def build_agent(dist: Path, work: Path, clean: bool) -> list[Path]:
    program = dist / exe_name("backapp-agent")
    program.unlink(missing_ok=True)  # a failed build must not leave an old one behind
    run_pyinstaller("backapp-agent.spec", dist, work, clean)
    check_version(program, "backapp-agent")
    return [program]


def build_tray(dist: Path, work: Path, clean: bool) -> list[Path]:
    for old in ("backapp-tray", "BackApp", "BackApp.app"):  # no old build left if this one fails
        shutil.rmtree(dist / old, ignore_errors=True)
    run_pyinstaller("backapp-tray.spec", dist, work, clean)
    stem = f"backapp-tray-{package_version()}-{platform_tag()}"
    if sys.platform == "darwin":
        bundle = dist / "BackApp.app"
        check_version(bundle / "Contents" / "MacOS" / "BackApp", "backapp-tray")
        shutil.rmtree(dist / "BackApp", ignore_errors=True)  # COLLECT's folder: the bundle has it
        return [bundle, archive(bundle, dist, stem)]
    folder = dist / "backapp-tray"
    check_version(folder / exe_name("backapp-tray"), "backapp-tray")
    return [folder, archive(folder, dist, stem)]


BUILDERS = {"backapp-agent": build_agent, "backapp-tray": build_tray}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python packaging/build.py",
        description="Build BackApp's programs with PyInstaller (see packaging/README.md).",
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        choices=[[], *TARGETS],
        help=f"what to build: {', '.join(TARGETS)} (default: all)",
    )
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (dist/)")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build", help="PyInstaller's work folder (build/)"
    )
    parser.add_argument("--clean", action="store_true", help="ignore PyInstaller's cache")
    parser.add_argument(
        "--version",
        type=checked_version,
        default=None,
        help="the version the programs say they are (default: pyproject.toml's)",
    )
    args = parser.parse_args(argv)
    if args.version is not None:
        os.environ[VERSION_ENV] = args.version  # read by the specs, in PyInstaller's process
    targets = list(dict.fromkeys(args.targets or TARGETS))
    dist, work = args.dist.resolve(), args.work.resolve()
    print(f"BackApp {package_version()} for {platform_tag()}: {', '.join(targets)}", flush=True)
    report = []
    for target in targets:
        started = time.monotonic()
        outputs = BUILDERS[target](dist, work, args.clean)
        elapsed = time.monotonic() - started
        sizes = ", ".join(f"{p.name} {human(tree_size(p))}" for p in outputs)
        report.append(f"{target}: {sizes}; built in {elapsed:.0f} s")
    print("\n".join(["", "Built:", *(f"  {line}" for line in report)]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
