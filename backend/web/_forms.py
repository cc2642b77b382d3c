"""HTML forms ⇄ the services' structs, with per-field errors and the submitted values kept.

A form that fails validation is shown again with what the person typed and a message next to each
field at fault; nothing they entered is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from litestar.datastructures import FormMultiDict

from backend.errors import DomainError
from backend.schemas import (
    ConfigIn,
    ConfigOut,
    ConfigPatch,
    Options,
    OptionsPatch,
    RetryOptions,
    Source,
)
from desktop_agent.engine.schedule import Schedule, ScheduleError

__all__ = ["ConfigForm", "field_errors", "text"]

MAX_NAME = 200
MAX_PATH = 4096
MAX_SOURCES = 100
MAX_EXCLUDE = 1024
MAX_EXCLUDES = 1000
MAX_RETENTION = 36500

# The services name fields as the JSON API does; the forms use these names.
_FORM_FIELD = {
    "agentId": "agent_id",
    "executionMode": "execution_mode",
    "retentionDays": "retention_days",
}


def text(form: FormMultiDict, name: str, limit: int = 100_000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def field_errors(exc: DomainError, default: str = "form") -> dict[str, str]:
    """A service's error as ``{form field: message}`` (the ``field: `` prefix dropped)."""
    name = _FORM_FIELD.get(exc.field or "", exc.field or default)
    detail = exc.detail
    prefix = f"{exc.field}: "
    if exc.field and detail.startswith(prefix):
        detail = detail[len(prefix) :]
    elif ": " in detail and detail.split(": ", 1)[0].split("[")[0] == exc.field:
        detail = detail.split(": ", 1)[1]
    return {name: detail[:1].upper() + detail[1:]}


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def _schedule_fields(schedule: Any) -> dict[str, Any]:
    """The form's schedule fields for a stored (normalised) schedule."""
    if not isinstance(schedule, dict) or not schedule:
        return {"schedule_kind": "none"}
    preset = schedule.get("preset")
    if preset == "hourly":
        return {"schedule_kind": "hourly", "schedule_minute": str(schedule.get("minute", 0))}
    if preset in ("daily", "weekly"):
        fields: dict[str, Any] = {
            "schedule_kind": str(preset),
            "schedule_at": str(schedule.get("at", "00:00")),
        }
        if preset == "weekly":
            fields["schedule_day"] = str(schedule.get("day", "mon"))
        return fields
    return {"schedule_kind": "cron", "schedule_cron": str(schedule.get("cron", ""))}


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


@dataclass
class ConfigForm:
    """The backup configuration form as typed (every value a string, as the browser sent it)."""

    name: str = ""
    execution_mode: str = "agent"
    agent_id: str = ""
    sources: str = ""
    excludes: str = ""
    type: str = "incremental"
    """New configurations default to incremental snapshots (server-side ones to full archives)."""
    compression: bool = True
    compression_format: str = "gzip"
    encryption: bool = False
    retention_days: str = "30"
    schedule_kind: str = "none"
    schedule_minute: str = "0"
    schedule_at: str = "02:00"
    schedule_day: str = "mon"
    schedule_cron: str = ""
    retry_attempts: str = "3"
    retry_delay: str = "60"
    alert_grace: str = "60"
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: FormMultiDict) -> ConfigForm:
        return cls(
            name=text(form, "name", 1000).strip(),
            execution_mode=text(form, "execution_mode", 20),
            agent_id=text(form, "agent_id", 100),
            sources=text(form, "sources"),
            excludes=text(form, "excludes"),
            type=text(form, "type", 20) or "incremental",
            compression=bool(form.get("compression")),
            compression_format=text(form, "compression_format", 20) or "gzip",
            encryption=bool(form.get("encryption")),
            retention_days=text(form, "retention_days", 20).strip(),
            schedule_kind=text(form, "schedule_kind", 20) or "none",
            schedule_minute=text(form, "schedule_minute", 20).strip() or "0",
            schedule_at=text(form, "schedule_at", 20).strip(),
            schedule_day=text(form, "schedule_day", 20).strip() or "mon",
            schedule_cron=text(form, "schedule_cron", 300).strip(),
            retry_attempts=text(form, "retry_attempts", 20).strip() or "3",
            retry_delay=text(form, "retry_delay", 20).strip() or "60",
            alert_grace=text(form, "alert_grace", 20).strip() or "60",
        )

    @classmethod
    def from_config(cls, config: ConfigOut) -> ConfigForm:
        form = cls(
            name=config.name,
            execution_mode=config.execution_mode,
            agent_id=config.agent_id or "",
            sources="\n".join(s.path for s in config.sources),
            excludes="\n".join(config.excludes),
            type=config.options.type,
            compression=config.options.compression,
            compression_format=config.options.compression_format,
            encryption=config.options.encryption,
            retention_days=str(config.options.retention_days),
            retry_attempts=str(config.options.retry.attempts),
            retry_delay=str(config.options.retry.delay_seconds),
            alert_grace=str(config.options.alert_grace_minutes),
        )
        return replace(form, **_schedule_fields(config.options.schedule))

    def with_errors(self, errors: dict[str, str]) -> ConfigForm:
        return replace(self, errors={**self.errors, **errors})

    def validate(self, agent_ids: set[str]) -> ConfigIn | None:
        """The create request, or None with ``errors`` filled in (every field at once)."""
        errors: dict[str, str] = {}
        if not self.name:
            errors["name"] = "Give the configuration a name."
        elif len(self.name) > MAX_NAME:
            errors["name"] = f"At most {MAX_NAME} characters."
        if self.execution_mode not in ("server", "agent"):
            errors["execution_mode"] = "Choose where the backup runs."
        elif self.execution_mode == "agent":
            if not self.agent_id:
                errors["agent_id"] = "Select the agent that runs this backup."
            elif self.agent_id not in agent_ids:
                errors["agent_id"] = "That agent does not exist (any more); select another."
        sources = _lines(self.sources)
        if not sources:
            errors["sources"] = "Add at least one folder or file to back up, one per line."
        elif len(sources) > MAX_SOURCES:
            errors["sources"] = f"At most {MAX_SOURCES} sources."
        elif any(len(s) > MAX_PATH or "\x00" in s for s in sources):
            errors["sources"] = f"Each path must be at most {MAX_PATH} characters."
        excludes = _lines(self.excludes)
        if len(excludes) > MAX_EXCLUDES:
            errors["excludes"] = f"At most {MAX_EXCLUDES} patterns."
        elif any(len(e) > MAX_EXCLUDE for e in excludes):
            errors["excludes"] = f"Each pattern must be at most {MAX_EXCLUDE} characters."
        if self.type not in ("full", "incremental"):
            errors["type"] = "Choose incremental or full."
        elif self.type == "incremental" and self.execution_mode == "server":
            errors["type"] = (
                "Server-side configurations make full archives; incremental snapshots are made "
                "by agents."
            )
        if self.compression_format not in ("gzip", "zstd"):
            errors["compression_format"] = "Choose gzip or zstd."
        try:
            retention = int(self.retention_days)
        except ValueError:
            retention = -1
        if not 0 <= retention <= MAX_RETENTION:
            errors["retention_days"] = f"A whole number of days from 0 to {MAX_RETENTION}."
        schedule: dict[str, Any] | None = None
        try:
            parsed = Schedule.parse(self._schedule_spec())
        except ScheduleError as exc:
            message = str(exc)
            errors["schedule"] = message[:1].upper() + message[1:]
        else:
            schedule = parsed.to_json() if parsed is not None else None
        attempts = _whole(self.retry_attempts)
        if not 1 <= attempts <= 10:
            errors["retry_attempts"] = "A whole number of tries from 1 to 10."
        delay = _whole(self.retry_delay)
        if not 1 <= delay <= 86400:
            errors["retry_delay"] = "A whole number of seconds from 1 to 86400."
        grace = _whole(self.alert_grace)
        if not 1 <= grace <= 10080:
            errors["alert_grace"] = "A whole number of minutes from 1 to 10080 (a week)."
        self.errors = errors
        if errors:
            return None
        return msgspec.convert(
            {
                "name": self.name,
                "executionMode": self.execution_mode,
                "agentId": self.agent_id if self.execution_mode == "agent" else None,
                "sources": [{"path": s} for s in sources],
                "excludes": excludes,
                "options": msgspec.to_builtins(
                    Options(
                        type="incremental" if self.type == "incremental" else "full",
                        compression=self.compression,
                        encryption=self.encryption,
                        retention_days=retention,
                        compression_format="zstd" if self.compression_format == "zstd" else "gzip",
                        schedule=schedule,
                        retry=RetryOptions(attempts=attempts, delay_seconds=delay),
                        alert_grace_minutes=grace,
                    )
                ),
            },
            ConfigIn,
        )

    def _schedule_spec(self) -> dict[str, Any] | None:
        kind = self.schedule_kind
        if kind == "none":
            return None
        if kind == "cron":
            if not self.schedule_cron:
                raise ScheduleError('enter a cron expression, e.g. "30 2 * * *"')
            return {"cron": self.schedule_cron}
        if kind == "hourly":
            minute = _whole(self.schedule_minute)
            return {"preset": "hourly", "minute": minute if minute >= 0 else self.schedule_minute}
        if kind == "daily":
            return {"preset": "daily", "at": self.schedule_at or "00:00"}
        if kind == "weekly":
            return {"preset": "weekly", "day": self.schedule_day, "at": self.schedule_at or "00:00"}
        raise ScheduleError("choose when the backup runs")

    @staticmethod
    def patch_from(data: ConfigIn) -> ConfigPatch:
        """The edit form sends every field: the patch sets them all."""
        opts: dict[str, Any] = msgspec.to_builtins(data.options)
        return ConfigPatch(
            name=data.name,
            sources=[Source(path=s.path) for s in data.sources],
            execution_mode=data.execution_mode,
            agent_id=data.agent_id,
            excludes=list(data.excludes),
            options=msgspec.convert(opts, OptionsPatch),
        )
