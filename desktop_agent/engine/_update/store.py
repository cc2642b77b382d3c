"""What the updater remembers across restarts, in the agent's state folder.

- ``update-pending.json``: an update that was swapped in but not yet proven (``from``, ``to``,
  ``deadline``). The new build clears it after its first successful heartbeat; a start after the
  deadline that finds it still there puts the previous build back.
- ``update-refused.json``: versions refused lately (a bad download, a build that failed its trial
  run or did not heartbeat in time), each with until when and why, so that an agent does not fetch
  the same broken build every heartbeat.

Both files are small JSON objects written atomically; an unreadable one counts as empty (a lost
refusal costs one more download, a lost marker one rollback that does not happen).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["PENDING_FILE", "REFUSED_FILE", "Pending", "UpdateStore"]

log = logging.getLogger("desktop_agent.engine.update")

PENDING_FILE = "update-pending.json"
REFUSED_FILE = "update-refused.json"


@dataclass(frozen=True, slots=True)
class Pending:
    """An update swapped in and waiting for the new build's first successful heartbeat."""

    from_version: str
    to_version: str
    deadline: datetime
    executable: str

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_version,
            "to": self.to_version,
            "deadline": self.deadline.isoformat(),
            "executable": self.executable,
        }

    @classmethod
    def from_json(cls, data: Any) -> Pending | None:
        try:
            return cls(
                str(data["from"]),
                str(data["to"]),
                datetime.fromisoformat(str(data["deadline"])),
                str(data.get("executable") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None


class UpdateStore:
    """The pending marker and the refused versions, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def pending_path(self) -> Path:
        return self.directory / PENDING_FILE

    @property
    def refused_path(self) -> Path:
        return self.directory / REFUSED_FILE

    # -- the pending marker ----------------------------------------------------------------------

    def pending(self) -> Pending | None:
        """The marker, or ``None`` (none, or unreadable)."""
        data = self._read(self.pending_path)
        return Pending.from_json(data) if data else None

    def set_pending(self, pending: Pending) -> None:
        self._write(self.pending_path, pending.to_json())

    def clear_pending(self) -> None:
        self.pending_path.unlink(missing_ok=True)

    # -- refused versions ------------------------------------------------------------------------

    def refused(self, version: str, now: datetime) -> str | None:
        """Why ``version`` was refused, while that refusal lasts; else ``None``."""
        entry = self._read(self.refused_path).get(version)
        if not isinstance(entry, dict):
            return None
        try:
            until = datetime.fromisoformat(str(entry["until"]))
        except (KeyError, ValueError):
            return None
        return str(entry.get("reason") or "refused") if now < until else None

    def refuse(self, version: str, reason: str, until: datetime) -> None:
        """Remember ``version`` as refused until ``until`` (older, lapsed entries are dropped)."""
        data = self._read(self.refused_path)
        kept: dict[str, Any] = {}
        for name, entry in data.items():
            try:
                if datetime.fromisoformat(str(entry["until"])) > until - timedelta(days=30):
                    kept[name] = entry
            except (KeyError, TypeError, ValueError):
                continue
        kept[version] = {"until": until.isoformat(), "reason": reason}
        self._write(self.refused_path, kept)

    # -- files -----------------------------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (ignored): %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
