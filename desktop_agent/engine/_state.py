"""The agent's local record of its last results (``state.json`` in the config directory), for
``backapp-agent status``: the server's history pages need the owner's session, which the agent has
not got."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .protocol import RunResult

__all__ = ["StateStore", "last_completed_at"]

STATE_FILE = "state.json"
# Parallel backups finish on their own threads: each merge reads, changes and replaces the file
# under this lock, or one result would overwrite the other's.
_RECORD_LOCK = threading.Lock()


def last_completed_at(entry: Any) -> str | None:
    """When the result ``entry`` (as ``state.json`` keeps it) says the config last completed."""
    if not isinstance(entry, dict):
        return None
    if entry.get("status") == "completed" and entry.get("finishedAt"):
        return str(entry["finishedAt"])
    value = entry.get("lastCompletedAt")
    return str(value) if value else None


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE

    def load(self) -> dict[str, Any]:
        """``{"lastRun": ISO time, "configs": {config id: last result}}`` (empty when none). Each
        result also has ``lastCompletedAt``: when this machine last completed a backup of the config
        (``None``: never), whatever the last result was."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"lastRun": None, "configs": {}}
        if not isinstance(data, dict) or not isinstance(data.get("configs"), dict):
            return {"lastRun": None, "configs": {}}
        return data

    def record(self, run: RunResult, *, when: datetime | None = None) -> None:
        """Merge a run's results into the file (atomically; thread-safe)."""
        with _RECORD_LOCK:
            self._record(run, when)

    def _record(self, run: RunResult, when: datetime | None) -> None:
        data = self.load()
        stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
        data["lastRun"] = stamp
        if run.error:
            data["lastRunError"] = run.error
        else:
            data.pop("lastRunError", None)
        for result in run.results:
            entry = result.to_json()
            entry["lastCompletedAt"] = (
                entry["finishedAt"]
                if result.ok
                else last_completed_at(data["configs"].get(result.config_id))
            )
            data["configs"][result.config_id] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
