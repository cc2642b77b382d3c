"""Screenshots of the status window, the tray menu and the icons, rendered in a child process under
Xvfb (``xvfb-run``) when it is installed, else offscreen; saved to ``test-output/screenshots/``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage

from tests.support.parallel import xvfb_run
from tests.support.paths import ROOT


def test_status_window_and_tray_menu_screenshots(screenshots: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKAPP_AGENT_")}
    command = [sys.executable, "-m", "tests.desktop_agent.gui.render_screens", str(screenshots)]
    if shutil.which("xvfb-run"):
        env["QT_QPA_PLATFORM"] = "xcb"
        command = [*xvfb_run("1280x1024x24"), *command]
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("status-window.png", "tray-menu.png", "tray-idle.png", "tray-attention.png"):
        image = QImage(str(screenshots / name))
        assert not image.isNull() and image.width() > 30 and image.height() > 30, name
