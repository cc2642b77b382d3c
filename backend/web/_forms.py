"""HTML forms ⇄ the services' structs, with per-field errors and the submitted values kept.

A form that fails validation is shown again with what the person typed and a message next to each
field at fault; nothing they entered is lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from litestar.datastructures import FormMultiDict

from backend.errors import DomainError
from backend.schemas import (
    ConfigIn,
    ConfigOut,
    ConfigPatch,
    DrillOptions,
    Options,
    OptionsPatch,
    RetentionPolicy,
    RetryOptions,
    Source,
)
from desktop_agent.engine.bandwidth import MAX_MBPS
from desktop_agent.engine.schedule import Schedule, ScheduleError

__all__ = ["ConfigForm", "field_errors", "is_uuid", "text"]

MAX_NAME = 200
MAX_PATH = 4096
MAX_SOURCES = 100
MAX_EXCLUDE = 1024
MAX_EXCLUDES = 1000
MAX_RETENTION = 36500
MAX_KEEP = 10000
#: The GFS fields of the form and their ``options.retention`` names.
KEEP_FIELDS = (
    ("keep_last", "keepLast"),
    ("keep_hourly", "keepHourly"),
    ("keep_daily", "keepDaily"),
    ("keep_weekly", "keepWeekly"),
    ("keep_monthly", "keepMonthly"),
    ("keep_yearly", "keepYearly"),
)

# The services name fields as the JSON API does; the forms use these names.
_FORM_FIELD = {
    "agentId": "agent_id",
    "executionMode": "execution_mode",
    "retentionDays": "retention_days",
    "drill": "drill_every",
    "preCommand": "pre_command",
    "postCommand": "post_command",
    "limits": "limit_upload",
}
DRILL_CHOICES = ("", "daily", "weekly", "monthly")

API_ONLY_OPTIONS = ("snapshot",)
"""Config options the form does not show: saving the form keeps what the API set (and of
``limits`` the schedule windows and pause rules: the form edits the two plain limits)."""
MAX_COMMAND = 4096


def text(form: FormMultiDict, name: str, limit: int = 100_000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def is_uuid(value: str) -> bool:
    """Whether a submitted id is a UUID at all (a stale or forged one is dropped, not looked up)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


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


def _keep(policy: RetentionPolicy | None, name: str) -> str:
    """A GFS field of the form for a stored policy (blank where the rule is off)."""
    n = getattr(policy, name, 0) if policy is not None else 0
    return str(n) if n else ""


def _mbps(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else ""


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
    type: str = ""
    """``full`` or ``incremental``; empty: incremental snapshots for an agent's configuration, full
    archives for a server-side one (the server makes no snapshots)."""
    compression: bool = True
    compression_format: str = "gzip"
    encryption: bool = False
    retention_days: str = "30"
    keep_last: str = ""
    keep_hourly: str = ""
    keep_daily: str = ""
    keep_weekly: str = ""
    keep_monthly: str = ""
    keep_yearly: str = ""
    """The GFS rules (``options.retention``); blank or 0: rule off."""
    schedule_kind: str = "none"
    schedule_minute: str = "0"
    schedule_at: str = "02:00"
    schedule_day: str = "mon"
    schedule_cron: str = ""
    retry_attempts: str = "3"
    retry_delay: str = "60"
    alert_grace: str = "60"
    drill_every: str = ""
    """Restore drills (``options.drill``): ``daily``, ``weekly``, ``monthly``; empty: none."""
    drill_sample: str = "20"
    limit_upload: str = ""
    """This config's own bandwidth limits in Mbit/s (``options.limits``); blank: the agent's."""
    limit_download: str = ""
    pre_command: str = ""
    """Shell commands around the backup (``options.preCommand`` / ``postCommand``)."""
    post_command: str = ""
    command_timeout: str = "600"
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: FormMultiDict) -> ConfigForm:
        return cls(
            name=text(form, "name", 1000).strip(),
            execution_mode=text(form, "execution_mode", 20),
            agent_id=text(form, "agent_id", 100),
            sources=text(form, "sources"),
            excludes=text(form, "excludes"),
            type=text(form, "type", 20),
            compression=bool(form.get("compression")),
            compression_format=text(form, "compression_format", 20) or "gzip",
            encryption=bool(form.get("encryption")),
            retention_days=text(form, "retention_days", 20).strip(),
            keep_last=text(form, "keep_last", 20).strip(),
            keep_hourly=text(form, "keep_hourly", 20).strip(),
            keep_daily=text(form, "keep_daily", 20).strip(),
            keep_weekly=text(form, "keep_weekly", 20).strip(),
            keep_monthly=text(form, "keep_monthly", 20).strip(),
            keep_yearly=text(form, "keep_yearly", 20).strip(),
            schedule_kind=text(form, "schedule_kind", 20) or "none",
            schedule_minute=text(form, "schedule_minute", 20).strip() or "0",
            schedule_at=text(form, "schedule_at", 20).strip(),
            schedule_day=text(form, "schedule_day", 20).strip() or "mon",
            schedule_cron=text(form, "schedule_cron", 300).strip(),
            retry_attempts=text(form, "retry_attempts", 20).strip() or "3",
            retry_delay=text(form, "retry_delay", 20).strip() or "60",
            alert_grace=text(form, "alert_grace", 20).strip() or "60",
            drill_every=text(form, "drill_every", 20).strip(),
            drill_sample=text(form, "drill_sample", 20).strip() or "20",
            limit_upload=text(form, "limit_upload", 40).strip(),
            limit_download=text(form, "limit_download", 40).strip(),
            pre_command=text(form, "pre_command", 2 * MAX_COMMAND).strip(),
            post_command=text(form, "post_command", 2 * MAX_COMMAND).strip(),
            command_timeout=text(form, "command_timeout", 20).strip() or "600",
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
            keep_last=_keep(config.options.retention, "keep_last"),
            keep_hourly=_keep(config.options.retention, "keep_hourly"),
            keep_daily=_keep(config.options.retention, "keep_daily"),
            keep_weekly=_keep(config.options.retention, "keep_weekly"),
            keep_monthly=_keep(config.options.retention, "keep_monthly"),
            keep_yearly=_keep(config.options.retention, "keep_yearly"),
            retry_attempts=str(config.options.retry.attempts),
            retry_delay=str(config.options.retry.delay_seconds),
            alert_grace=str(config.options.alert_grace_minutes),
            drill_every=config.options.drill.every if config.options.drill else "",
            drill_sample=str(config.options.drill.sample if config.options.drill else 20),
            limit_upload=_mbps((config.options.limits or {}).get("upload")),
            limit_download=_mbps((config.options.limits or {}).get("download")),
            pre_command=config.options.pre_command or "",
            post_command=config.options.post_command or "",
            command_timeout=str(config.options.command_timeout_seconds),
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
        if self.type not in ("", "full", "incremental"):
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
        keep: dict[str, int] = {}
        for name, camel in KEEP_FIELDS:
            value = getattr(self, name)
            number = _whole(value) if value else 0
            if not 0 <= number <= MAX_KEEP:
                errors[name] = f"A whole number from 0 to {MAX_KEEP} (blank or 0: not used)."
            elif number:
                keep[camel] = number
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
        kind = (
            "full"
            if self.type == "full" or (not self.type and self.execution_mode == "server")
            else "incremental"
        )
        drill: DrillOptions | None = None
        sample = _whole(self.drill_sample)
        if self.drill_every not in DRILL_CHOICES:
            errors["drill_every"] = "Choose daily, weekly, monthly or no drills."
        elif self.drill_every and kind == "full":
            errors["drill_every"] = (
                "Restore drills sample the files of a snapshot: choose the incremental type, "
                "or no drills."
            )
        elif self.drill_every and not 1 <= sample <= 1000:
            errors["drill_sample"] = "A whole number of files from 1 to 1000."
        elif self.drill_every:
            drill = DrillOptions(every=self.drill_every, sample=sample)  # type: ignore[arg-type]
        limits = self._limits(errors)
        timeout = _whole(self.command_timeout)
        if not 1 <= timeout <= 86400:
            errors["command_timeout"] = "A whole number of seconds from 1 to 86400."
        for name in ("pre_command", "post_command"):
            if len(getattr(self, name)) > MAX_COMMAND:
                errors[name] = f"At most {MAX_COMMAND} characters."
            elif getattr(self, name) and self.execution_mode == "server":
                errors[name] = "Commands run on an agent's machine, not on the server."
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
                        type=kind,  # type: ignore[arg-type]
                        compression=self.compression,
                        encryption=self.encryption,
                        retention_days=retention,
                        retention=(msgspec.convert(keep, RetentionPolicy) if keep else None),
                        compression_format="zstd" if self.compression_format == "zstd" else "gzip",
                        schedule=schedule,
                        retry=RetryOptions(attempts=attempts, delay_seconds=delay),
                        alert_grace_minutes=grace,
                        drill=drill,
                        limits=limits,
                        pre_command=self.pre_command or None,
                        post_command=self.post_command or None,
                        command_timeout_seconds=timeout,
                    )
                ),
            },
            ConfigIn,
        )

    def _limits(self, errors: dict[str, str]) -> dict[str, Any] | None:
        found: dict[str, Any] = {}
        for name, key in (("limit_upload", "upload"), ("limit_download", "download")):
            raw = getattr(self, name).replace(",", ".")
            try:
                value = float(raw) if raw else None
            except ValueError:
                value = -1.0
            if value is not None and not 0 < value <= MAX_MBPS:
                errors[name] = (
                    f"A number of Mbit/s above 0, at most {MAX_MBPS:g} (blank: the agent's)."
                )
            found[key] = value
        return found if any(v is not None for v in found.values()) else None

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
    def patch_from(data: ConfigIn, current: Options | None = None) -> ConfigPatch:
        """The edit form sends every field it shows: the patch sets them all, and leaves what
        only the API sets (bandwidth limits, pre/post commands, snapshot) as it is."""
        opts: dict[str, Any] = msgspec.to_builtins(data.options)
        for key in API_ONLY_OPTIONS:
            opts.pop(key, None)
        if current is not None and current.limits:
            # The form edits the plain limits; windows and pause rules set through the API stay.
            opts["limits"] = {
                **current.limits,
                **(opts.get("limits") or dict.fromkeys(("upload", "download"))),
            }
        return ConfigPatch(
            name=data.name,
            sources=[Source(path=s.path) for s in data.sources],
            execution_mode=data.execution_mode,
            agent_id=data.agent_id,
            excludes=list(data.excludes),
            options=msgspec.convert(opts, OptionsPatch),
        )
