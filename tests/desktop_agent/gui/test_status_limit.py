"""The status window says what holds a running backup back, in words: the bandwidth limit
("Upload limited to 4 Mbit/s", the words of the progress on the web console) or a pause rule
("Paused on battery power…", "Paused on a metered connection…"). The engine's real events go
through the real controller and window under an offscreen Qt event loop; the limits are a real
``BandwidthControl`` whose power probe is told what the machine is on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop_agent.engine import (
    ArchiveProgress,
    BackupFinished,
    BandwidthControl,
    ConfigStarted,
    KeyStore,
)
from desktop_agent.engine.bandwidth import BandwidthLimits
from desktop_agent.gui._windows.status import LIMIT_REFRESH_MS
from tests.support.tray import close_app, make_app, pair

SERVER = "http://127.0.0.1:9"  # nothing listens: these tests never start polling
KEY = "bka_" + "s" * 43
WAIT = LIMIT_REFRESH_MS * 3


class Power:
    """What the machine says about its connection and power (``None``: cannot tell)."""

    def __init__(self) -> None:
        self.on_metered: bool | None = False
        self.battery: bool | None = False

    def metered(self) -> bool | None:
        return self.on_metered

    def on_battery(self) -> bool | None:
        return self.battery


def _progress(done: int) -> ArchiveProgress:
    return ArchiveProgress(
        config_id="c1",
        files_done=1,
        files_total=2,
        bytes_done=done,
        bytes_total=10_000_000,
        archive_bytes=done,
        rate=500_000.0,
        eta=20.0,
    )


def test_the_status_window_shows_the_limit_and_a_pause_in_words(
    qtbot: Any, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    power = Power()
    control = BandwidthControl(probe=power, interval=3600)
    try:
        c = app.controller
        c.bandwidth = control
        window = app.status
        control.set_server(
            BandwidthLimits.parse({"upload": 4, "pauseOnMetered": True, "pauseOnBattery": True})
        )
        c.apply_event(ConfigStarted(config_id="c1", config_name="Photos", sources=("/p",)))
        c.apply_event(_progress(1_000_000))
        panel = window.panels["c1"]
        assert not panel.limit.isHidden()
        assert panel.limit.text() == "Upload limited to 4 Mbit/s"

        # The engine's backup holds the process's bucket; on battery the bucket pauses. No event
        # comes while it waits: the window notices by itself.
        with control.running("c1", None, lambda: False):
            power.battery = True
            control.refresh()
            qtbot.waitUntil(lambda: panel.limit.text().startswith("Paused"), timeout=WAIT)
            assert panel.limit.text() == (
                "Paused on battery power: the backup goes on by itself when that ends"
            )
            power.battery, power.on_metered = False, True
            control.refresh()
            qtbot.waitUntil(lambda: "metered" in panel.limit.text(), timeout=WAIT)
            assert panel.limit.text() == (
                "Paused on a metered connection: the backup goes on by itself when that ends"
            )
            power.on_metered = False
            control.refresh()
            qtbot.waitUntil(lambda: panel.limit.text().startswith("Upload"), timeout=WAIT)
            # A limit raised from the web console (a heartbeat) shows without an event too.
            control.set_server(BandwidthLimits.parse({"upload": 40}))
            qtbot.waitUntil(
                lambda: panel.limit.text() == "Upload limited to 40 Mbit/s", timeout=WAIT
            )

        c.apply_event(
            BackupFinished(
                config_id="c1",
                config_name="Photos",
                log_id="l1",
                filename="photos.tar.gz",
                files=2,
                bytes=10_000_000,
                archive_size=10_000_000,
                sha256="0" * 64,
                duration_ms=20_000,
                rate=500_000.0,
                errors=0,
            )
        )
        assert panel.limit.isHidden()  # the limit is about running backups only

        # No limit at all: nothing is said.
        control.set_server(None)
        c.apply_event(ConfigStarted(config_id="c1", config_name="Photos", sources=("/p",)))
        c.apply_event(_progress(5))
        assert panel.limit.isHidden() and panel.limit.text() == ""
    finally:
        control.close()
        close_app(app)
