"""What agents found when they checked their snapshots (``backapp-agent check``) and when they
rehearsed a restore (restore drills), kept per configuration for the pages and the alerts.

Only the agent holds the repository key, so only it can read packs back and verify every blob,
or restore files and compare them with their chunk ids; the server records what it reports
(one row per configuration and kind, ``repos.tables.ConfigCheck``) and raises the alerts:

* ``data_check`` (subject ``config:{id}``): the latest check of the config found problems;
  resolved by the next check that finds none.
* ``drill_failed`` (``config:{id}``): the latest drill failed; resolved by the next that passes.
* ``drill_overdue``: see ``drill_alerts``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from backend.backups.tables import Alert, BackupConfig, BackupLog
from backend.check_schemas import (
    DrillRequest,
    DrillResponse,
    ProblemIn,
    RepoCheckRequest,
    RepoCheckResponse,
)
from backend.db import json_value
from backend.errors import InvalidInput, NotFound
from backend.repos.tables import ConfigCheck
from backend.services.agents import AgentIdentity, assigned_config
from backend.services.clock import aware, iso, utcnow
from backend.services.drill_alerts import (
    DATA_CHECK_ALERT,
    DRILL_FAILED_ALERT,
    DRILL_OVERDUE_ALERT,
    config_options,
)

__all__ = ["ConfigProof", "RepoCheckService", "restore_time", "size_text"]

log = logging.getLogger("backapp.checks")

_BATCH = 500


def restore_time(seconds: float | None) -> str:
    """A projected duration as people say it: ``under a minute``, ``about 4 minutes``, ``about
    2 hours``, ``about 3 days``."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(seconds / 3600)
    if hours < 48:
        return f"about {hours} hours"
    return f"about {round(seconds / 86400)} days"


def size_text(n: int) -> str:
    """``1536`` → ``1.5 KiB`` (binary units, one decimal); under 1 KiB, a count of bytes."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _seconds(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _problems_text(problems: list[ProblemIn]) -> str:
    shown = "; ".join(p.message for p in problems[:3])
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return f"{shown}{more}"


def _share(percent: float) -> str:
    return f"{percent:g}%"


@dataclass(frozen=True)
class ConfigProof:
    """What the pages show of a config's latest check and drill."""

    check_at: str | None = None
    check_ok: bool | None = None
    check_summary: str = ""
    check_share: str = ""
    """The share of the data the check read, in words (``10%``; ``none``)."""
    drill_at: str | None = None
    drill_ok: bool | None = None
    drill_summary: str = ""
    proven_at: str | None = None
    """When a drill last passed: the config was last proven restorable."""
    full_restore: str | None = None
    """The projected time to restore the whole snapshot, in words, from that drill."""


class RepoCheckService:
    """Records the agents' check and drill reports; reads them back for the pages."""

    def __init__(self, clock: Any = utcnow) -> None:
        self.clock = clock

    async def _snapshot_of(
        self, agent: AgentIdentity, config_id: str, backup_id: str
    ) -> tuple[uuid.UUID, str]:
        """The config (this agent's, incremental) and the name it had; ``backup_id`` must be a
        snapshot of it."""
        cid, name = await assigned_config(agent, config_id)
        row = await BackupConfig.select(BackupConfig.options).where(BackupConfig.id == cid).first()
        kind = config_options((row or {}).get("options")).get("type", "full")
        if kind != "incremental":
            raise InvalidInput(
                f'configId: this configuration makes "{kind}" archives; checks and restore '
                'drills are for snapshots (options.type "incremental")',
                field="configId",
            )
        try:
            bid = uuid.UUID(backup_id)
        except ValueError:
            raise NotFound("backupId: no such snapshot of this configuration") from None
        if not await BackupLog.exists().where(
            (BackupLog.id == bid)
            & (BackupLog.config == cid)
            & (BackupLog.backup_type == "incremental")
        ):
            raise NotFound("backupId: no such snapshot of this configuration")
        return cid, name

    async def record_check(self, agent: AgentIdentity, req: RepoCheckRequest) -> RepoCheckResponse:
        """``POST /api/agent/repo/check``: one row per config checked; a ``data_check`` alert for
        each config with problems (resolved for those without)."""
        now = self.clock()
        checked = [
            (await self._snapshot_of(agent, r.config_id, r.backup_id), r) for r in req.results
        ]
        opened = 0
        for (cid, name), r in checked:
            share = _share(req.read_data)
            if r.ok and not r.problems:
                read = (
                    f"{share} of its data read and verified ({r.packs_read} of {r.packs} packs, "
                    f"{size_text(r.bytes_read)})"
                    if r.packs_read
                    else "its structure only (no data read)"
                )
                summary = (
                    f"No problems: {r.trees} folders and {r.blobs} chunks in {r.packs} packs "
                    f"are where the index says; {read}."
                )
                ok = True
            else:
                ok = False
                count = len(r.problems)
                summary = (
                    f"{count} problem{'s' if count != 1 else ''} found"
                    f" ({share} of the data read): {_problems_text(r.problems)}"
                    if r.problems
                    else f"The check failed ({share} of the data read)."
                )
            details = {
                "readData": req.read_data,
                "duration": req.duration,
                **msgspec.to_builtins(r),
            }
            await self._save(agent, cid, "check", r.backup_id, ok, summary, details, now)
            opened += await _alert(
                agent.user_id,
                DATA_CHECK_ALERT,
                cid,
                ok,
                f"Check of '{name}' found problems in its newest snapshot: {summary}",
                now,
            )
            log.log(
                logging.INFO if ok else logging.WARNING,
                "check of config %s by agent %s: %s",
                cid,
                agent.id,
                summary,
            )
        return RepoCheckResponse(recorded=len(checked), alerts_opened=opened)

    async def record_drill(self, agent: AgentIdentity, req: DrillRequest) -> DrillResponse:
        """``POST /api/agent/drill``: the config's drill row, and its ``drill_failed`` alert
        opened (or resolved, with ``drill_overdue``)."""
        now = self.clock()
        cid, name = await self._snapshot_of(agent, req.config_id, req.backup_id)
        ok = req.ok and not req.problems and not req.error
        if ok:
            first = (
                f"; first byte after {_seconds(req.time_to_first_byte)}"
                if req.time_to_first_byte is not None
                else ""
            )
            summary = (
                f"{req.files} of {req.sample} sampled files ({size_text(req.bytes)}) restored and "
                f"verified in {_seconds(req.duration)}{first}; a full restore "
                f"({size_text(req.snapshot_bytes)}) would take "
                f"{restore_time(req.projected_seconds)}."
            )
        else:
            why = req.error or _problems_text(req.problems) or "no reason given"
            summary = (
                f"Failed: {req.files} of {req.sample} sampled files restored and verified; {why}"
            )
        details = msgspec.to_builtins(req)
        await self._save(agent, cid, "drill", req.backup_id, ok, summary, details, now)
        # Its drill_overdue alert can open or clear only now: the alert round looks at it again.
        await BackupConfig.update(
            {BackupConfig.alert_due_at: None, BackupConfig.revision: BackupConfig.revision + 1}
        ).where(BackupConfig.id == cid)
        await _alert(
            agent.user_id,
            DRILL_FAILED_ALERT,
            cid,
            ok,
            f"Restore drill of '{name}' failed: {summary}",
            now,
        )
        if ok:
            await Alert.update({Alert.resolved_at: now}).where(
                (Alert.kind == DRILL_OVERDUE_ALERT)
                & (Alert.subject == f"config:{cid}")
                & Alert.resolved_at.is_null()
            )
        log.log(
            logging.INFO if ok else logging.WARNING,
            "restore drill of config %s by agent %s: %s",
            cid,
            agent.id,
            summary,
        )
        return DrillResponse(summary=summary)

    async def _save(
        self,
        agent: AgentIdentity,
        config_id: uuid.UUID,
        kind: str,
        backup_id: str,
        ok: bool,
        summary: str,
        details: dict[str, Any],
        now: datetime,
    ) -> None:
        values: dict[Any, Any] = {
            ConfigCheck.agent: agent.id,
            ConfigCheck.at: now,
            ConfigCheck.ok: ok,
            ConfigCheck.backup: backup_id,
            ConfigCheck.summary: summary,
            ConfigCheck.details: details,
        }
        if ok:
            values[ConfigCheck.ok_at] = now
            values[ConfigCheck.ok_details] = details
        where = (ConfigCheck.config == config_id) & (ConfigCheck.kind == kind)
        if await ConfigCheck.exists().where(where):
            await ConfigCheck.update(values).where(where)
            return
        await ConfigCheck.insert(
            ConfigCheck(
                id=uuid.uuid4(),
                user=agent.user_id,
                config=config_id,
                kind=kind,
                **{column._meta.name: value for column, value in values.items()},
            )
        ).on_conflict(action="DO NOTHING")

    async def proofs(self, user_id: uuid.UUID, config_ids: list[str]) -> dict[str, ConfigProof]:
        """The latest check and drill of each of these configs of this user (one query)."""
        ids = [uuid.UUID(c) for c in config_ids]
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), _BATCH):
            rows.extend(
                await ConfigCheck.select(
                    ConfigCheck.config,
                    ConfigCheck.kind,
                    ConfigCheck.at,
                    ConfigCheck.ok,
                    ConfigCheck.summary,
                    ConfigCheck.details,
                    ConfigCheck.ok_at,
                    ConfigCheck.ok_details,
                ).where(
                    (ConfigCheck.user == user_id)
                    & ConfigCheck.config.is_in(ids[start : start + _BATCH])
                )
            )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            found.setdefault(str(row["config"]), {})[row["kind"]] = row
        out: dict[str, ConfigProof] = {}
        for config_id, kinds in found.items():
            check, drill = kinds.get("check"), kinds.get("drill")
            fields: dict[str, Any] = {}
            if check is not None:
                share = (json_value(check["details"]) or {}).get("readData")
                fields.update(
                    check_at=iso(aware(check["at"])),
                    check_ok=bool(check["ok"]),
                    check_summary=check["summary"],
                    check_share=_share(float(share)) if share else "none",
                )
            if drill is not None:
                fields.update(
                    drill_at=iso(aware(drill["at"])),
                    drill_ok=bool(drill["ok"]),
                    drill_summary=drill["summary"],
                )
                if drill["ok_at"] is not None:
                    proven = json_value(drill["ok_details"]) or {}
                    fields.update(
                        proven_at=iso(aware(drill["ok_at"])),
                        full_restore=restore_time(proven.get("projectedSeconds")),
                    )
            out[config_id] = ConfigProof(**fields)
        return out


async def _alert(
    user_id: uuid.UUID, kind: str, config_id: uuid.UUID, ok: bool, message: str, now: datetime
) -> int:
    """Resolve the config's open alert of ``kind`` when ``ok``; else open one (once). Returns
    how many were opened."""
    subject = f"config:{config_id}"
    where = (Alert.kind == kind) & (Alert.subject == subject) & Alert.resolved_at.is_null()
    if ok:
        await Alert.update({Alert.resolved_at: now}).where(where)
        return 0
    if await Alert.exists().where(where):
        await Alert.update({Alert.message: message}).where(where)
        return 0
    await Alert.insert(
        Alert(
            id=uuid.uuid4(),
            user=user_id,
            kind=kind,
            subject=subject,
            message=message,
            created_at=now,
        )
    )
    log.info("alert opened: %s %s: %s", kind, subject, message)
    return 1
