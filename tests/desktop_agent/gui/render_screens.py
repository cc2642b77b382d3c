"""Renders the status window, the tray menu and the tray icons from a demo state (no server), for the
README: ``python -m tests.desktop_agent.gui.render_screens OUTDIR``. ``test_screenshots`` runs it under Xvfb (a real
X server, so menus and fonts render as on a desktop) when ``xvfb-run`` exists, else offscreen."""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path


def render(out: Path) -> list[Path]:
    os.environ["BACKAPP_AGENT_CONFIG_DIR"] = tempfile.mkdtemp(prefix="backapp-shots-")
    import msgspec
    from PySide6.QtCore import QCoreApplication, QEvent, QPoint
    from PySide6.QtWidgets import QApplication

    from desktop_agent.engine import (
        AgentSettings,
        ArchiveProgress,
        BackupFailed,
        BackupFinished,
        BandwidthControl,
        ConfigInfo,
        ConfigStarted,
        FileFailed,
        KeyStore,
    )
    from desktop_agent.engine.bandwidth import BandwidthLimits
    from desktop_agent.gui import AgentController, ConfigView, Health
    from desktop_agent.gui._icons import health_pixmap
    from desktop_agent.gui._tray import TrayMenu
    from desktop_agent.gui._windows import StatusWindow
    from tests.support.keyring import MemoryKeyring

    app = QApplication.instance() or QApplication(sys.argv[:1])
    directory = Path(os.environ["BACKAPP_AGENT_CONFIG_DIR"])
    keystore = KeyStore(directory, backend=MemoryKeyring(), env={})
    server = "https://backapp.example.org"
    keystore.save(server, "bka_demo")
    settings = AgentSettings(server_url=server, agent_id="ada-macbook")
    c = AgentController(directory, keystore, settings=settings)
    c.status.online = True
    c.bandwidth = BandwidthControl()  # the running backup's limit, from the web console
    c.bandwidth.set_server(BandwidthLimits.parse({"upload": 10}))
    ids = {"Documents": "c1", "Photos": "c2", "Projects": "c3"}
    for name, cid in ids.items():
        c.views[cid] = ConfigView(id=cid, name=name, sources=(f"/home/ada/{name}",))
    # Their schedules, so the menu and the window show each one's next backup.
    crons = {"Documents": "0 * * * *", "Photos": "30 2 * * *", "Projects": None}
    c.runs.dispatcher.set_configs(
        [
            msgspec.convert(
                {
                    "id": ids[name],
                    "name": name,
                    "sources": [{"path": f"/home/ada/{name}"}],
                    "options": {"schedule": {"cron": cron}} if cron else {},
                },
                ConfigInfo,
            )
            for name, cron in crons.items()
        ]
    )
    c.apply_event(
        BackupFinished(
            config_id="c2",
            config_name="Photos",
            log_id="l2",
            filename="backup-2025-01-07-101500.tar.gz",
            files=18_204,
            bytes=48_318_382_080,
            archive_size=47_915_233_280,
            sha256="0" * 64,
            duration_ms=1_380_000,
            rate=35e6,
            errors=0,
        )
    )
    c.views["c2"].phase = "idle"
    c.views["c2"].last = dict(
        c.views["c2"].last or {}, finishedAt=(datetime.now(UTC) - timedelta(hours=3)).isoformat()
    )
    c.apply_event(
        BackupFailed(
            config_id="c3",
            config_name="Projects",
            log_id=None,
            reason="Source folder not found: /home/ada/Projects",
            duration_ms=12,
        )
    )
    c.views["c3"].phase = "idle"
    c.runs._worker = object()  # type: ignore[assignment]  # looks like a run in progress
    c.apply_event(
        ConfigStarted(config_id="c1", config_name="Documents", sources=("/home/ada/Documents",))
    )
    c.apply_event(
        FileFailed(
            config_id="c1", path="/home/ada/Documents/locked.db", message="Permission denied"
        )
    )
    c.apply_event(
        ArchiveProgress(
            config_id="c1",
            files_done=5_312,
            files_total=12_840,
            bytes_done=1_932_735_283,
            bytes_total=4_617_089_843,
            archive_bytes=1_610_612_736,
            rate=42.6e6,
            eta=63.0,
        )
    )

    saved: list[Path] = []
    window = StatusWindow(c)
    window.resize(660, 700)
    window.show()
    app.processEvents()
    path = out / "status-window.png"
    window.grab().save(str(path))
    saved.append(path)

    tray = TrayMenu(c)
    tray.menu.popup(QPoint(40, 40))
    app.processEvents()
    path = out / "tray-menu.png"
    tray.menu.grab().save(str(path))
    saved.append(path)
    tray.menu.hide()

    for health in (Health.IDLE, Health.BUSY, Health.ATTENTION, Health.PAUSED):
        path = out / f"tray-{health.value}.png"
        health_pixmap(health, 64).save(str(path))
        saved.append(path)
    c.runs._worker = None
    c.bandwidth.close()
    window.close()
    c.close()
    for obj in (window, tray.menu, tray, c):
        obj.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return saved


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for p in render(target):
        print(p)
