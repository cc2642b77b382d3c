"""``backapp check``: is every object a live snapshot needs still in storage, with its size?

The server needs no key for this: for each ``completed`` snapshot it knows the packs it needs (the
commit's bitmap) and the size each pack was stored with, and the snapshot object's size. It asks
storage for each distinct object once (HEAD, at most ``CONCURRENCY`` at a time) and reports every
difference by config and snapshot. Problems open a ``storage_check`` alert on the config (resolved
by the next check that finds the config whole); the alert rounds leave these alerts alone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backend.backups.tables import Alert
from backend.repos.tables import RepoObject, Repository, Snapshot
from backend.services.clock import utcnow
from backend.services.keys import repository_key
from backend.services.prune import bitmap_int, seqs_of
from backend.settings import Settings
from backend.storage import ObjectStoreError, Storage

__all__ = ["CHECK_ALERT", "CheckReport", "CheckService", "Problem"]

log = logging.getLogger("backapp.check")

CHECK_ALERT = "storage_check"
CONCURRENCY = 16
BATCH = 500


@dataclass(frozen=True)
class Problem:
    """What is wrong with one snapshot."""

    config_id: str | None
    config_name: str
    backup_id: str
    user_id: str
    message: str
    objects: tuple[dict[str, Any], ...] = ()
    """``{"kind", "name", "expected", "found"}`` per object (``found`` None when absent)."""


@dataclass
class CheckReport:
    repositories: int = 0
    snapshots: int = 0
    packs: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    alerts_opened: int = 0
    alerts_resolved: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as the command's ``--json`` prints it."""
        return {
            "ok": not self.problems,
            "repositories": self.repositories,
            "snapshots": self.snapshots,
            "packs": self.packs,
            "bytes": self.bytes,
            "problems": [
                {
                    "configId": p.config_id,
                    "configName": p.config_name,
                    "backupId": p.backup_id,
                    "message": p.message,
                    "objects": list(p.objects),
                }
                for p in self.problems
            ],
            "alertsOpened": self.alerts_opened,
            "alertsResolved": self.alerts_resolved,
        }


class CheckService:
    def __init__(self, storage: Storage, settings: Settings | None = None) -> None:
        self.storage = storage
        self.settings = settings

    async def run(self, *, alert: bool = True, now: datetime | None = None) -> CheckReport:
        """Check every live snapshot; open (and resolve) alerts unless ``alert`` is false."""
        now = now or utcnow()
        report = CheckReport()
        snaps = await Snapshot.select(
            Snapshot.repository,
            Snapshot.packs,
            Snapshot.backup.as_alias("backup_id"),
            Snapshot.backup.config.as_alias("config_id"),
            Snapshot.backup.config_name.as_alias("config_name"),
            Snapshot.backup.user.as_alias("user_id"),
        ).where(Snapshot.backup.status == "completed")
        report.snapshots = len(snaps)
        repos = {
            r["id"]: r
            for r in await Repository.select(
                Repository.id, Repository.user, Repository.agent, Repository.prefix_agent
            )
        }
        needed: dict[Any, int] = {}
        for s in snaps:
            needed[s["repository"]] = needed.get(s["repository"], 0) | bitmap_int(s["packs"])
        report.repositories = len(needed)
        # What the catalogue says of each needed pack, and of each snapshot object.
        rows: dict[tuple[Any, str, str], dict[str, Any]] = {}
        by_seq: dict[tuple[Any, int], dict[str, Any]] = {}
        for rid, bits in needed.items():
            seqs = seqs_of(bits)
            for i in range(0, len(seqs), BATCH):
                for r in await RepoObject.select(
                    RepoObject.seq, RepoObject.name, RepoObject.size, RepoObject.state
                ).where(
                    (RepoObject.repository == rid)
                    & (RepoObject.kind == "data")
                    & RepoObject.seq.is_in(seqs[i : i + BATCH])
                ):
                    by_seq[(rid, int(r["seq"]))] = r
        names = [str(s["backup_id"]) for s in snaps]
        for i in range(0, len(names), BATCH):
            for r in await RepoObject.select(
                RepoObject.repository, RepoObject.name, RepoObject.size, RepoObject.state
            ).where((RepoObject.kind == "snapshot") & RepoObject.name.is_in(names[i : i + BATCH])):
                rows[(r["repository"], "snapshot", r["name"])] = r
        # One HEAD per distinct object.
        targets: dict[tuple[Any, str, str], int] = {}
        bad: dict[tuple[Any, str, str], dict[str, Any]] = {}
        for (rid, _seq), r in by_seq.items():
            targets[(rid, "data", r["name"])] = int(r["size"])
        for key, r in rows.items():
            targets[key] = int(r["size"])
        report.packs = sum(1 for k in targets if k[1] == "data")
        report.bytes = sum(size for k, size in targets.items() if k[1] == "data")
        gate = asyncio.Semaphore(CONCURRENCY)

        async def head(key: tuple[Any, str, str], size: int) -> None:
            rid, kind, name = key
            repo = repos[rid]
            path = repository_key(repo, kind, name)
            async with gate:
                try:
                    info = await self.storage.head(path)
                except ObjectStoreError as exc:
                    bad[key] = {"kind": kind, "name": name, "expected": size, "error": str(exc)}
                    return
            if info is None or info.size != size:
                bad[key] = {
                    "kind": kind,
                    "name": name,
                    "expected": size,
                    "found": None if info is None else info.size,
                }

        await asyncio.gather(*(head(k, size) for k, size in targets.items()))
        for s in snaps:
            rid = s["repository"]
            wrong: list[dict[str, Any]] = []
            snap_key = (rid, "snapshot", str(s["backup_id"]))
            if snap_key not in rows or rows[snap_key]["state"] == "deleted":
                wrong.append({"kind": "snapshot", "name": snap_key[2], "found": None})
            elif snap_key in bad:
                wrong.append(bad[snap_key])
            for seq in seqs_of(bitmap_int(s["packs"])):
                pack = by_seq.get((rid, seq))
                if pack is None or pack["state"] == "deleted":
                    name = pack["name"] if pack else f"#{seq}"
                    wrong.append({"kind": "data", "name": name, "found": None})
                elif (rid, "data", pack["name"]) in bad:
                    wrong.append(bad[(rid, "data", pack["name"])])
            if wrong:
                report.problems.append(_problem(s, wrong))
        report.problems.sort(key=lambda p: (p.config_name, p.config_id or "", p.backup_id))
        for p in report.problems:
            log.warning(
                "check: config %r (%s) snapshot %s: %s",
                p.config_name,
                p.config_id,
                p.backup_id,
                p.message,
            )
        if alert:
            await self._alerts(snaps, report, now)
        return report

    async def _alerts(
        self, snaps: Sequence[dict[str, Any]], report: CheckReport, now: datetime
    ) -> None:
        """One open ``storage_check`` alert per config with problems; the others resolved."""
        broken: dict[str, list[Problem]] = {}
        for p in report.problems:
            if p.config_id is not None:
                broken.setdefault(p.config_id, []).append(p)
        checked = {str(s["config_id"]) for s in snaps if s["config_id"] is not None}
        open_rows = await Alert.select(Alert.id, Alert.subject).where(
            (Alert.kind == CHECK_ALERT) & Alert.resolved_at.is_null()
        )
        open_subjects = {r["subject"] for r in open_rows}
        healed = [
            r["id"]
            for r in open_rows
            if r["subject"].removeprefix("config:") in checked
            and r["subject"].removeprefix("config:") not in broken
        ]
        if healed:
            await Alert.update({Alert.resolved_at: now}).where(Alert.id.is_in(healed))
            report.alerts_resolved = len(healed)
        for config_id, problems in broken.items():
            subject = f"config:{config_id}"
            if subject in open_subjects:
                continue
            first = problems[0]
            count = sum(len(p.objects) for p in problems)
            await Alert.insert(
                Alert(
                    id=uuid.uuid4(),
                    user=uuid.UUID(first.user_id),
                    kind=CHECK_ALERT,
                    subject=subject,
                    message=(
                        f"{first.config_name}: {count} stored object(s) of {len(problems)} "
                        "snapshot(s) are missing or damaged in storage (backapp check)"
                    ),
                    created_at=now,
                )
            )
            report.alerts_opened += 1


def _problem(snap: dict[str, Any], wrong: list[dict[str, Any]]) -> Problem:
    missing = [w for w in wrong if w.get("found") is None and "error" not in w]
    sized = [w for w in wrong if w.get("found") is not None]
    errors = [w for w in wrong if "error" in w]
    parts = []
    if missing:
        names = ", ".join(f"{w['kind']} {w['name']}" for w in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        parts.append(f"{len(missing)} object(s) missing ({names}{more})")
    if sized:
        parts.append(
            f"{len(sized)} object(s) with another size ("
            + ", ".join(f"{w['name']}: {w['found']} bytes, not {w['expected']}" for w in sized[:3])
            + ")"
        )
    if errors:
        parts.append(f"{len(errors)} object(s) could not be checked ({errors[0]['error']})")
    config = snap["config_id"]
    return Problem(
        config_id=str(config) if config is not None else None,
        config_name=str(snap["config_name"]),
        backup_id=str(snap["backup_id"]),
        user_id=str(snap["user_id"]),
        message="; ".join(parts),
        objects=tuple(wrong),
    )
