"""Shared fixtures (shared helpers that are not fixtures live in ``tests/support/``).

Layout: the tests mirror the packages (``tests/backend/<subpackage>/``,
``tests/desktop_agent/{engine,cli,gui}/``, ``tests/packaging/``); every end-to-end test lives in
``tests/e2e/<feature>/``.

Tiers:
* unit tests use nothing here but plain fixtures;
* integration tests drive the real ASGI app (``client``) on SQLite and again on PostgreSQL
  (``db_url`` is parametrized; the PostgreSQL cluster is a throwaway one started by the fixture);
* end-to-end tests (``tests/e2e/`` only) start real ``backapp serve`` processes
  (``live_server_factory``) next to a real S3 endpoint on loopback (``s3_server``: moto in server
  mode, or SeaweedFS, which checks signatures and checksums, when a test parametrizes it; see
  ``tests/support/s3.py``);
* the tray app's tests (``tests/desktop_agent/gui/``, ``tests/e2e/tray/``) run Qt offscreen with an
  in-memory keychain (``memory_keyring``, ``agent_dir``, ``keystore``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

# Environment before import: nothing in the test process may touch a real user's data directory.
_TEST_HOME = Path(os.environ.setdefault("BACKAPP_TEST_HOME", f"/tmp/backapp-test-{os.getpid()}"))
# xdist's workers inherit the environment of the process that starts them: each takes a folder of its
# own in there (its SQLite template, the servers' default data), removed when its session ends.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    _TEST_HOME = _TEST_HOME / _WORKER
    os.environ["BACKAPP_TEST_HOME"] = str(_TEST_HOME)
os.environ["BACKAPP_DATA_DIR"] = str(_TEST_HOME / "default-data")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("AWS_S3_BUCKET", None)
# Qt picks its platform plugin when the ``QApplication`` is made: set before anything imports the GUI.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")

import httpx  # noqa: E402
import keyring  # noqa: E402
import pytest  # noqa: E402

from backend.app import create_app  # noqa: E402
from backend.services import Services  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.storage import LocalStorage  # noqa: E402
from desktop_agent.engine import KeyStore  # noqa: E402
from tests.support.api import ApiClient  # noqa: E402
from tests.support.keyring import MemoryKeyring  # noqa: E402
from tests.support.paths import ROOT  # noqa: E402
from tests.support.server_process import LiveServerFactory  # noqa: E402
from tests.support.settings import make_settings, migrate  # noqa: E402

pytest_plugins = [
    "tests.support.parallel",
    "tests.support.postgres",
    "tests.support.s3",
    "tests.support.seaweedfs",
]

SCREENSHOTS = ROOT / "test-output" / "screenshots"


@pytest.fixture(scope="session")
def test_home() -> Iterator[Path]:
    _TEST_HOME.mkdir(parents=True, exist_ok=True)
    yield _TEST_HOME
    shutil.rmtree(_TEST_HOME, ignore_errors=True)
    if _WORKER:
        with contextlib.suppress(OSError):  # the last worker to finish removes the shared parent
            _TEST_HOME.parent.rmdir()


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
    # The tests drive the periodic rounds with their own clock: the round at start-up (on the
    # real clock, on its own thread) must not race the rows a test writes.
    await services.tasks.started()
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


# -- the tray app -------------------------------------------------------------------------------------


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    """The keychain every keyring call of the test reaches: no test touches a real keychain."""
    backend = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    return backend


@pytest.fixture
def agent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh agent settings folder, selected through the environment like a user would."""
    directory = tmp_path / "agent-config"
    monkeypatch.setenv("BACKAPP_AGENT_CONFIG_DIR", str(directory))
    monkeypatch.setenv("BACKAPP_AGENT_TEMP_DIR", str(tmp_path / "agent-tmp"))
    for var in ("BACKAPP_AGENT_API_KEY", "BACKAPP_AGENT_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    return directory


@pytest.fixture
def keystore(agent_dir: Path, memory_keyring: MemoryKeyring) -> KeyStore:
    return KeyStore(agent_dir, backend=memory_keyring, env={})


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def no_dialogs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Records the questions the app would ask (answering yes) instead of opening modal boxes."""
    from PySide6.QtWidgets import QMessageBox

    asked: list[Any] = []

    def question(*args: Any, **kwargs: Any) -> QMessageBox.StandardButton:
        asked.append(args)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    yield asked
