"""How a running backup's progress and a config's schedule read on the pages (Jinja filters).

``static/live.js`` builds the same progress text in the browser when an event arrives; keep the two
in step.
"""

from __future__ import annotations

from typing import Any

from backend.web import _format
from desktop_agent.engine.schedule import Schedule, ScheduleError

__all__ = ["progress_percent", "progress_text", "schedule_text"]

_PHASES = {
    "scanning": "Scanning",
    "archiving": "Archiving",
    "uploading": "Uploading",
    "finishing": "Finishing",
}


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def progress_percent(progress: dict[str, Any] | None) -> int | None:
    """0–100 from bytes (else files), or None when the total is not known yet (the scan)."""
    if not progress or progress.get("phase") == "scanning":
        return None
    for done_key, total_key in (("bytesDone", "bytesTotal"), ("filesDone", "filesTotal")):
        done, total = _count(progress.get(done_key)), _count(progress.get(total_key))
        if done is not None and total:
            return max(0, min(100, int(done * 100 / total)))
    return None


def progress_text(progress: dict[str, Any] | None) -> str:
    """``Uploading · 120 / 300 files · 4.8 MiB / 11.4 MiB · 1.2 MiB/s · about 6 s left``; while
    scanning, what was found so far: ``Scanning · 12,345 files · 3.1 GiB``; while the agent waits
    for storage, what it says instead of a rate: ``Uploading · waiting for storage: … · 120 / 300
    files · 4.8 MiB / 11.4 MiB``."""
    if not progress:
        return ""
    phase = progress.get("phase")
    parts = [_PHASES.get(str(phase), "Running")]
    if phase == "scanning":
        found, size = _count(progress.get("filesTotal")), _count(progress.get("bytesTotal"))
        if found is not None:
            parts.append(f"{found:,} files")
        if size is not None:
            parts.append(_format.filesize(size))
        return " · ".join(parts)
    waiting = progress.get("waiting")
    if isinstance(waiting, str) and waiting:
        # The upload is stuck on storage (or the server): rate and time left would be a lie.
        parts.append(waiting)
    files, files_total = _count(progress.get("filesDone")), _count(progress.get("filesTotal"))
    if files is not None:
        parts.append(f"{files:,} / {files_total:,} files" if files_total else f"{files:,} files")
    done, total = _count(progress.get("bytesDone")), _count(progress.get("bytesTotal"))
    if done is not None:
        parts.append(
            f"{_format.filesize(done)} / {_format.filesize(total)}"
            if total
            else _format.filesize(done)
        )
    if isinstance(waiting, str) and waiting:
        return " · ".join(parts)
    rate = _count(progress.get("rate"))
    if rate:
        parts.append(f"{_format.filesize(int(rate))}/s")
    limit = progress.get("limit")
    if isinstance(limit, str) and limit:
        parts.append(limit)
    eta = _count(progress.get("eta"))
    if eta is not None:
        parts.append(f"about {_format.duration(int(eta) * 1000)} left")
    return " · ".join(parts)


def schedule_text(schedule: Any) -> str:
    """A config's ``options.schedule`` as people read it; ``Manual only`` when there is none."""
    try:
        parsed = Schedule.parse(schedule)
    except ScheduleError:
        return "Invalid schedule"
    return parsed.describe() if parsed is not None else "Manual only"
