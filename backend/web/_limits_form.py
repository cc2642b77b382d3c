"""The agent page's *Bandwidth* form: limits, one schedule window, pause rules, and how many
configs the agent backs up at once (``parallelBackups``).

The form edits the first window of a schedule; more windows set through the API are kept as they
are. The rules themselves (validation, what a limit set means) are ``desktop_agent.engine.bandwidth``.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import FormMultiDict

from backend.web._forms import text

__all__ = [
    "DAY_CHOICES",
    "LIMIT_FIELDS",
    "limits_from_form",
    "limits_values",
    "parallel_from_form",
    "parallel_text",
]

DAY_CHOICES = {
    "": "No schedule",
    "weekdays": "Weekdays",
    "weekend": "Weekends",
    "daily": "Every day",
}
_DAY_SETS = {
    ("mon", "tue", "wed", "thu", "fri"): "weekdays",
    ("sat", "sun"): "weekend",
    ("mon", "tue", "wed", "thu", "fri", "sat", "sun"): "daily",
}
LIMIT_FIELDS = {
    "limits.upload": "limit_upload",
    "limits.download": "limit_download",
    "limits.schedule[0].upload": "window_upload",
    "limits.schedule[0].download": "window_download",
    "limits.schedule[0].from": "window_from",
    "limits.schedule[0].to": "window_to",
    "limits.schedule[0].days": "window_days",
    "limits.schedule[0]": "window_from",
    "parallelBackups": "parallel_backups",
}
"""Which form field a service error about a limit belongs to."""


def _number(raw: str) -> Any:
    """A limit as typed: blank is no limit; anything not a number is passed on for the
    service to refuse in words."""
    raw = raw.strip().replace(",", ".")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return raw


def limits_from_form(form: FormMultiDict, current: dict[str, Any] | None) -> dict[str, Any]:
    """The limits JSON the form describes (windows after the first kept from ``current``)."""
    windows: list[Any] = list((current or {}).get("schedule") or [])[1:]
    days = text(form, "window_days", 20).strip()
    if days:
        windows.insert(
            0,
            {
                "days": days,
                "from": text(form, "window_from", 10).strip(),
                "to": text(form, "window_to", 10).strip(),
                "upload": _number(text(form, "window_upload", 40)),
                "download": _number(text(form, "window_download", 40)),
            },
        )
    return {
        "upload": _number(text(form, "limit_upload", 40)),
        "download": _number(text(form, "limit_download", 40)),
        "schedule": windows,
        "pauseOnMetered": bool(form.get("pause_metered")),
        "pauseOnBattery": bool(form.get("pause_battery")),
    }


def parallel_from_form(form: FormMultiDict) -> Any:
    """``parallelBackups`` as typed: blank is the machine's own setting (``None``); anything not a
    whole number is passed on as text for the service to refuse in words."""
    raw = text(form, "parallel_backups", 20).strip()
    if not raw:
        return None
    return int(raw) if raw.isdecimal() else raw


def parallel_text(value: int | None) -> str:
    """The agent's ``parallelBackups`` in words, for the page."""
    if value is None:
        return (
            "Parallel backups: the machine's own setting (one configuration at a time unless "
            "it was set with backapp-agent configure --parallel-backups)."
        )
    if value == 1:
        return "Parallel backups: one configuration at a time."
    return f"Parallel backups: up to {value} configurations at the same time."


def _shown(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def limits_values(
    limits: dict[str, Any] | None,
    form: FormMultiDict | None = None,
    parallel_backups: int | None = None,
) -> dict[str, Any]:
    """The form's fields: what was typed (``form``, after an error), else the stored limits and
    ``parallel_backups``."""
    if form is not None:
        return {
            name: text(form, name, 40)
            for name in (
                "parallel_backups",
                "limit_upload",
                "limit_download",
                "window_days",
                "window_from",
                "window_to",
                "window_upload",
                "window_download",
            )
        } | {
            "pause_metered": bool(form.get("pause_metered")),
            "pause_battery": bool(form.get("pause_battery")),
            "more_windows": 0,
        }
    limits = limits or {}
    windows = limits.get("schedule") or []
    first = windows[0] if windows else {}
    return {
        "parallel_backups": "" if parallel_backups is None else str(parallel_backups),
        "limit_upload": _shown(limits.get("upload")),
        "limit_download": _shown(limits.get("download")),
        "window_days": (
            _DAY_SETS.get(tuple(first["days"]), ",".join(first["days"])) if first else ""
        ),
        "window_from": first.get("from", "09:00"),
        "window_to": first.get("to", "18:00"),
        "window_upload": _shown(first.get("upload")),
        "window_download": _shown(first.get("download")),
        "pause_metered": bool(limits.get("pauseOnMetered")),
        "pause_battery": bool(limits.get("pauseOnBattery")),
        "more_windows": max(0, len(windows) - 1),
    }
