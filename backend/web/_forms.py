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
from backend.schemas import ConfigIn, ConfigOut, ConfigPatch, Options, OptionsPatch, Source

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
    type: str = "full"
    compression: bool = True
    compression_format: str = "gzip"
    encryption: bool = False
    retention_days: str = "30"
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: FormMultiDict) -> ConfigForm:
        return cls(
            name=text(form, "name", 1000).strip(),
            execution_mode=text(form, "execution_mode", 20),
            agent_id=text(form, "agent_id", 100),
            sources=text(form, "sources"),
            excludes=text(form, "excludes"),
            type=text(form, "type", 20) or "full",
            compression=bool(form.get("compression")),
            compression_format=text(form, "compression_format", 20) or "gzip",
            encryption=bool(form.get("encryption")),
            retention_days=text(form, "retention_days", 20).strip(),
        )

    @classmethod
    def from_config(cls, config: ConfigOut) -> ConfigForm:
        return cls(
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
        )

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
        if self.type != "full":
            errors["type"] = "Only full backups are available."
        if self.compression_format not in ("gzip", "zstd"):
            errors["compression_format"] = "Choose gzip or zstd."
        try:
            retention = int(self.retention_days)
        except ValueError:
            retention = -1
        if not 0 <= retention <= MAX_RETENTION:
            errors["retention_days"] = f"A whole number of days from 0 to {MAX_RETENTION}."
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
                        type="full",
                        compression=self.compression,
                        encryption=self.encryption,
                        retention_days=retention,
                        compression_format="zstd" if self.compression_format == "zstd" else "gzip",
                    )
                ),
            },
            ConfigIn,
        )

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
