"""The agent's local record of its last results (``state.json`` in the config directory), for
``backapp-agent status``: the server's history pages need the owner's session, which the agent has
not got."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .protocol import RunResult

__all__ = ["StateStore"]

STATE_FILE = "state.json"


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE

    def load(self) -> dict[str, Any]:
        """``{"lastRun": ISO time, "configs": {config id: last result}}`` (empty when none)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"lastRun": None, "configs": {}}
        if not isinstance(data, dict) or not isinstance(data.get("configs"), dict):
            return {"lastRun": None, "configs": {}}
        return data

    def record(self, run: RunResult, *, when: datetime | None = None) -> None:
        """Merge a run's results into the file (atomically)."""
        data = self.load()
        stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
        data["lastRun"] = stamp
        if run.error:
            data["lastRunError"] = run.error
        else:
            data.pop("lastRunError", None)
        for result in run.results:
            data["configs"][result.config_id] = result.to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
