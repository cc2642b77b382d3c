"""A throwaway PostgreSQL cluster for the test session.

Usage (once registered as a plugin, e.g. ``pytest_plugins = ["tests.support.postgres"]``
in the root ``tests/conftest.py``)::

    def test_something(pg_cluster):
        dsn = pg_cluster.create_database("t_something")
        ...
        pg_cluster.drop_database("t_something")

The session-scoped ``pg_cluster`` fixture runs ``initdb`` into a fresh temporary
directory, starts the server with ``pg_ctl`` on ``127.0.0.1`` and a free port
(trust auth, durability switched off for speed), and stops it with
``pg_ctl stop -m immediate`` and removes the directory at session end.

Requirements:

* PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``) on ``PATH`` or
  under ``/usr/lib/postgresql/<version>/bin`` (Debian: ``apt-get install postgresql``).
* ``initdb`` refuses to run as root. When the tests run as root, the binaries are
  run as the ``postgres`` OS user (via ``runuser``, else ``su``). Debian's package
  creates that user; otherwise create it with
  ``useradd --system --no-create-home postgres``.
* The temp dir (``$TMPDIR`` or ``/tmp``) must be traversable by that user.

If the binaries (or, as root, the ``postgres`` user) are missing, tests that use the
fixture are skipped, unless ``BACKAPP_TEST_REQUIRE_POSTGRES=1`` is set, in which
case they fail with install instructions (CI sets it).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .ports import free_port

__all__ = ["PgCluster", "find_pg_bin_dir", "pg_cluster", "start_cluster"]

REQUIRE_ENV = "BACKAPP_TEST_REQUIRE_POSTGRES"
OS_USER = "postgres"  # OS user that runs the server when the tests run as root
SUPERUSER = "postgres"  # database superuser created by initdb (-U)
_INSTALL_HINT = (
    "Install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`; "
    "they live in /usr/lib/postgresql/<version>/bin) and, when running as root, make sure "
    "the `postgres` OS user exists (`useradd --system --no-create-home postgres`)."
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")

T = TypeVar("T")


class PostgresUnavailable(RuntimeError):
    """The environment cannot run a throwaway cluster (missing binaries or OS user)."""


def _require_postgres() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,)
    name = Path(path).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def find_pg_bin_dir() -> Path | None:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    Looks on PATH first (resolving symlinks such as /usr/local/bin/initdb ->
    /usr/lib/postgresql/15/bin/initdb, so all binaries come from one installation),
    then the newest ``/usr/lib/postgresql/*/bin``.
    """
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
        candidates.append(Path(initdb).parent)
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidates.append(Path(found))
    for d in candidates:
        if all(os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _run_in_fresh_loop(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private event loop in a helper thread.

    Works whether or not the caller already runs inside an event loop (sync fixtures,
    async fixtures, plain code).
    """
    result: dict[str, Any] = {}

    async def main() -> T:
        return await factory()

    def target() -> None:
        try:
            result["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="pg-cluster-admin", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PgCluster:
    """A running throwaway cluster. Connect over TCP with trust auth."""

    host: str
    port: int
    user: str
    password: str | None
    base_dir: Path
    data_dir: Path
    socket_dir: Path
    log_file: Path
    bin_dir: Path
    _runner: Callable[[list[str]], list[str]] = field(repr=False)

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        """``postgresql://`` URL of ``database`` on this cluster."""
        auth = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one SQL statement (outside a transaction) as the superuser."""
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self.dsn(database), timeout=30)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        _run_in_fresh_loop(go)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally from ``template``); return its URL.

        The template database must have no open connections (PostgreSQL rule).
        """
        for n in (name, template):
            if n is not None and not _NAME_RE.match(n):
                raise ValueError(f"unsupported database name: {n!r}")
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_ident(template)}"
        self.execute(sql)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, terminating its open connections."""
        if not _NAME_RE.match(name):
            raise ValueError(f"unsupported database name: {name!r}")
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete its directory."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                subprocess.run(
                    self._runner(
                        [
                            str(self.bin_dir / "pg_ctl"),
                            "stop",
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "immediate",
                            "-w",
                            "-t",
                            "30",
                        ]
                    ),
                    cwd=self.base_dir,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    timeout=60,
                )
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def _make_runner() -> Callable[[list[str]], list[str]]:
    """Wrap a command so that it runs as a non-root user."""
    if os.geteuid() != 0:
        return lambda cmd: cmd
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no `{OS_USER}` OS user to run initdb/pg_ctl as"
        ) from None
    runuser = shutil.which("runuser")
    if runuser:
        return lambda cmd: [runuser, "-u", OS_USER, "--", *cmd]
    su = shutil.which("su") or "su"
    return lambda cmd: [su, OS_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _run_checked(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stdout}"
        )


def start_cluster() -> PgCluster:
    """initdb + pg_ctl start a new cluster. Raise PostgresUnavailable or RuntimeError."""
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")
    runner = _make_runner()
    as_root = os.geteuid() == 0

    base_dir = Path(tempfile.mkdtemp(prefix="backapp-pg-"))
    try:
        data_dir = base_dir / "data"
        socket_dir = base_dir / "sock"
        log_file = base_dir / "postgres.log"
        socket_dir.mkdir()
        if as_root:
            pw = pwd.getpwnam(OS_USER)
            for p in (base_dir, socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            probe = subprocess.run(runner(["test", "-w", str(base_dir)]), check=False)
            if probe.returncode != 0:
                raise RuntimeError(
                    f"the `{OS_USER}` user cannot write {base_dir}; set TMPDIR to a directory "
                    "whose parents it can traverse (e.g. /tmp)"
                )

        _run_checked(
            runner(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            base_dir,
            "initdb",
        )
        # Trust auth over loopback TCP; the unix socket lives in a private directory
        # (mode 0700 inside the temp dir) and is only there for pg_ctl's readiness checks.
        hba = ["local  all  all                trust", "host   all  all  127.0.0.1/32  trust"]
        (data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")

        last_error: Exception | None = None
        for _attempt in range(3):  # the free port can be stolen between probe and bind
            port = free_port()
            with (data_dir / "postgresql.conf").open("a") as f:
                f.write(
                    "\n# --- backapp test settings ---\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {port}\n"
                    f"unix_socket_directories = '{socket_dir}'\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "max_connections = 200\n"
                    "shared_buffers = 32MB\n"
                    "logging_collector = off\n"
                )
            try:
                _run_checked(
                    runner(
                        [
                            str(bin_dir / "pg_ctl"),
                            "start",
                            "-D",
                            str(data_dir),
                            "-l",
                            str(log_file),
                            "-w",
                            "-t",
                            "60",
                        ]
                    ),
                    base_dir,
                    "pg_ctl start",
                )
            except RuntimeError as exc:
                tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
                last_error = RuntimeError(f"{exc}\n--- server log ---\n{tail}")
                continue
            return PgCluster(
                host="127.0.0.1",
                port=port,
                user=SUPERUSER,
                password=None,
                base_dir=base_dir,
                data_dir=data_dir,
                socket_dir=socket_dir,
                log_file=log_file,
                bin_dir=bin_dir,
                _runner=runner,
            )
        assert last_error is not None
        raise last_error
    except BaseException:
        # Best effort: stop a half-started server, then remove everything.
        if (base_dir / "data" / "postmaster.pid").exists():
            subprocess.run(
                runner(
                    [
                        str(bin_dir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(base_dir / "data"),
                        "-m",
                        "immediate",
                        "-w",
                    ]
                ),
                cwd=base_dir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        shutil.rmtree(base_dir, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway PostgreSQL cluster for the whole test session."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        if _require_postgres():
            pytest.fail(f"{exc} but {REQUIRE_ENV}=1 is set. {_INSTALL_HINT}", pytrace=False)
        pytest.skip(f"{exc}. {_INSTALL_HINT} (Set {REQUIRE_ENV}=1 to make this an error.)")
    except RuntimeError as exc:
        pytest.fail(f"could not start the throwaway PostgreSQL cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
