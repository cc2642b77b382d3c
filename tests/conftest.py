"""Shared fixtures.

Tiers:
* unit tests use nothing here but plain fixtures;
* integration tests drive the real ASGI app (``client``) on SQLite and again on PostgreSQL
  (``db_url`` is parametrized; the PostgreSQL cluster is a throwaway one started by the fixture);
* end-to-end tests start real ``backapp serve`` processes (``live_server_factory``) next to a real
  S3 endpoint on loopback (``s3_server``: moto in server mode, or SeaweedFS, which checks signatures
  and checksums, when a test parametrizes it; see ``tests/support/s3.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Environment before import: nothing in the test process may touch a real user's data directory.
_TEST_HOME = Path(os.environ.setdefault("BACKAPP_TEST_HOME", f"/tmp/backapp-test-{os.getpid()}"))
os.environ["BACKAPP_DATA_DIR"] = str(_TEST_HOME / "default-data")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("AWS_S3_BUCKET", None)

import httpx  # noqa: E402
import pytest  # noqa: E402

from backend.app import create_app  # noqa: E402
from backend.services import Services  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.storage import LocalStorage  # noqa: E402
from tests.support.api import ApiClient  # noqa: E402
from tests.support.server_process import LiveServerFactory  # noqa: E402

pytest_plugins = ["tests.support.postgres", "tests.support.s3", "tests.support.seaweedfs"]

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"test-secret-0123456789abcdef0123456789abcdef"


def migrate(database_url: str) -> None:
    """Apply the real Piccolo migrations, the way ``backapp migrate`` does."""
    env = {**os.environ, "DATABASE_URL": database_url, "BACKAPP_SECRET_KEY": SECRET.decode()}
    subprocess.run(
        [sys.executable, "-m", "backend.cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def test_home() -> Iterator[Path]:
    _TEST_HOME.mkdir(parents=True, exist_ok=True)
    yield _TEST_HOME
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_template(test_home: Path) -> Path:
    path = test_home / "template.sqlite3"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_cluster) -> str:  # type: ignore[no-untyped-def]
    url = pg_cluster.create_database("backapp_template")
    migrate(url)
    return "backapp_template"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of each kind, one per test."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "db.sqlite3"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        template_name: str = request.getfixturevalue("pg_template")
        name = f"t_{uuid.uuid4().hex[:12]}"
        url: str = cluster.create_database(name, template=template_name)
        yield url
        cluster.drop_database(name)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only, for tests that are about something other than the database."""
    path = tmp_path / "db.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=SECRET,
        public_url="http://testserver.local",
        heartbeat_flush_seconds=0.2,
        # Server-side configs are refused unless their sources lie under these roots; the
        # integration tests use made-up paths. Tests of the rule itself override this.
        server_source_roots=("/",),
        # The periodic tasks run once at start-up; tests drive them directly with their own clock.
        task_interval=3600.0,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def services(settings: Settings) -> Services:
    storage = LocalStorage(
        root=settings.data_dir / "storage", base_url=settings.base_url, secret=settings.secret_key
    )
    return Services.build(settings, storage)


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[ApiClient]:
    """The real ASGI app (local storage), with helpers for signing up and acting as an agent."""
    app = create_app(settings, services)
    # The app runs on the test's own event loop (not a portal thread), so tests may query the
    # tables directly through the same PostgreSQL pool the app uses.
    transport = httpx.ASGITransport(app=app)
    await app.state.runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver.local"
        ) as raw:
            yield ApiClient(raw)
    finally:
        await app.state.runtime.stop()


@pytest.fixture
def live_server_factory(tmp_path: Path, test_home: Path) -> Iterator[LiveServerFactory]:
    factory = LiveServerFactory(tmp_path)
    yield factory
    factory.stop_all()
