"""Quitting the tray app mid-backup, many times, never crashes it.

The tray app died once in three tries when quitting mid-backup ("Fatal Python error: none_dealloc"
in the compress and upload threads). The cause is the Qt binding's reference counting of ``None``
and ``True`` on CPython 3.11 (``desktop_agent.gui._refcounts``): every call into Qt took a reference
away, and the count reached zero while the interpreter shut down. The first test runs more such
calls than there are references, in a process of its own (the failure is an abort); the second
starts the real ``backapp-tray`` against a real server again and again, and stops it with SIGTERM
while its backup runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop_agent.engine import AgentSettings, save_settings
from desktop_agent.gui._refcounts import binding_drops_references
from tests.support.server_process import LiveServerFactory

CALLS = """
import sys
from PySide6.QtCore import QCoreApplication, QObject, Signal

# More calls than None and True have references (counted before any guard), with room to spare.
calls = max(sys.getrefcount(None), sys.getrefcount(True)) + 50_000
if sys.argv[1] == "guarded":
    import desktop_agent.gui  # what the tray app and its tests import first
app = QCoreApplication([])


class Probe(QObject):
    progress = Signal(object)


probe = Probe()
probe.progress.connect(lambda event: None)
for _ in range(calls):
    probe.setObjectName("x")
    probe.progress.emit(1)
app.processEvents()
print("survived")
"""


def _calls(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "calls.py"
    script.write_text(CALLS)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, str(script), mode], env=env, capture_output=True, text=True, timeout=300
    )


def test_more_calls_into_qt_than_none_has_references_do_not_abort(tmp_path: Path) -> None:
    if binding_drops_references():  # the bug is there: unguarded, the process aborts
        bare = _calls(tmp_path, "bare")
        assert bare.returncode != 0 and "Fatal Python error" in bare.stderr
    guarded = _calls(tmp_path, "guarded")
    assert guarded.returncode == 0 and guarded.stdout.strip() == "survived", guarded.stderr


QUITS = 6


def test_quitting_mid_backup_again_and_again_exits_cleanly(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    server = live_server_factory.start(env={"BACKAPP_POLL_INTERVAL": "1"})
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    source = tmp_path / "src"
    source.mkdir()
    for i in range(24):  # random: stored as is, and enough to be mid-upload when we quit
        (source / f"f{i:02d}.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    config = owner.create_config(agent_id, name="Big", sources=[{"path": str(source)}])
    agent_dir = tmp_path / "agent"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKAPP_", "AWS_"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        BACKAPP_AGENT_CONFIG_DIR=str(agent_dir),
        BACKAPP_AGENT_TEMP_DIR=str(tmp_path / "agent-tmp"),
        BACKAPP_AGENT_API_KEY=key,
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    save_settings(AgentSettings(server_url=server.url), env=env)

    for attempt in range(QUITS):
        tray = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from desktop_agent.tray import main; sys.exit(main())",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            r = owner.request("POST", f"/api/configs/{config['id']}/run")
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not owner.backups(status="running"):
                assert tray.poll() is None, tray.communicate()
                time.sleep(0.05)
            assert owner.backups(status="running"), f"attempt {attempt}: no backup started"
            time.sleep(0.1 * attempt)  # a little later each time: different stages of the upload
            tray.send_signal(signal.SIGTERM)
            out, err = tray.communicate(timeout=60)
        finally:
            if tray.poll() is None:
                tray.kill()
                tray.communicate()
        assert "Fatal Python error" not in err, err
        assert tray.returncode == 0, err
        statuses = [b["status"] for b in owner.backups()]
        assert "running" not in statuses, statuses
    backups = owner.backups()
    assert {b["status"] for b in backups} <= {"cancelled", "completed"}
    if not any(b["status"] == "cancelled" for b in backups):
        pytest.fail("every backup finished before the quit: the test did not quit mid-backup")
