"""``schedule.json``: what the scheduler remembers of each config across restarts.

The file sits in the agent's config folder and holds, per config id, one ``ScheduleRecord``: the cron
the config's slots were counted with, since when (``since``), and the last slot whose job ended
(``lastRun``). A record whose cron differs from the config's schedule today is stale: slots then count
from now.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["SCHEDULE_FILE", "ScheduleRecord", "ScheduleStore"]

SCHEDULE_FILE = "schedule.json"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One config's entry in ``schedule.json``. Read leniently: a field that is missing or not
    understood is ``None``."""

    cron: str | None
    since: datetime | None
    last_run: datetime | None
    """The latest slot whose job ended (succeeded, or failed with no retry left)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduleRecord:
        cron = data.get("cron")
        return cls(
            cron=cron if isinstance(cron, str) else None,
            since=_parse_iso(data.get("since")),
            last_run=_parse_iso(data.get("lastRun")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "since": _iso(self.since) if self.since else None,
            "lastRun": _iso(self.last_run) if self.last_run else None,
        }


class ScheduleStore:
    """``schedule.json``: per config, the cron it was evaluated with, since when (``since``) and the
    last slot run (``lastRun``). Written atomically."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / SCHEDULE_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        configs = data.get("configs") if isinstance(data, dict) else None
        if not isinstance(configs, dict):
            return {}
        return {k: v for k, v in configs.items() if isinstance(k, str) and isinstance(v, dict)}

    def save(self, configs: Mapping[str, Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{SCHEDULE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        body = {"configs": {k: dict(v) for k, v in configs.items()}}
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
