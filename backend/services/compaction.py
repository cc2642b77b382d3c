"""Compaction of partly-used packs: the agent rewrites them, the server commits and later deletes.

Pruning deletes a pack once no live snapshot names it, but a pack that one kept blob still needs
stays whole. Only the agent can tell which blobs of a pack are live (it holds the key), so:

1. **The server asks.** Each maintenance round (``round``) sets ``compact_requested_at`` on the
   repositories whose expired snapshots were pruned since their last compaction; the heartbeat
   tells the agent (``compact``).
2. **The agent rewrites** (``start``, ``objects``, ``commit``): it reads every live snapshot's
   trees, copies the live blobs of its partly-used packs into new packs (the sealed blobs as
   they are), uploads them and an index object through pre-signed PUTs, and commits each
   snapshot's new pack bitmap.
3. **The server commits** in one transaction: the new packs and indexes exist in storage with
   their recorded sizes, the snapshots' bitmaps change, and the packs no completed snapshot
   names any more become ``retired``.
4. **Pruning deletes** retired packs, after ``BACKAPP_COMPACT_GRACE_SECONDS`` (a bitmap of them is
   ``held`` on the compaction row until then), through its usual path: never racing a running
   snapshot, and skipping a repository while a compaction of it runs or just committed.

A lying agent (a compromised laptop holds the key) could commit bitmaps that drop packs its
snapshots still need, or new packs that hold garbage. The server cannot read packs, so it limits
the damage instead: new packs must be this compaction's own uploads, stored with their sizes;
together they may not be larger than the packs they replace; bitmaps may only name stored packs;
and nothing is deleted before the grace window ends, while ``previous`` keeps every rewritten
snapshot's old bitmap (``undo`` puts them back).

Interrupted anywhere, every snapshot stays restorable: until the commit no bitmap changes (the new
packs are unnamed and pruned after ``BACKAPP_PRUNE_GRACE_SECONDS``); the commit is one
transaction; a compaction whose agent went quiet is ``abandoned`` by the next round, and the
request stays for the next run.
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backend.backups.tables import BackupLog
from backend.compact_schemas import (
    CompactAbortRequest,
    CompactCommitRequest,
    CompactCommitResponse,
    CompactObjectsRequest,
    CompactSnapshotOut,
    CompactStartResponse,
)
from backend.db import json_value
from backend.errors import Conflict, InvalidInput, NotFound
from backend.repos.tables import Compaction, RepoObject, Repository, Snapshot
from backend.schemas import CompactRequestOut
from backend.services.agents import AgentIdentity
from backend.services.catalog.metadata import write_quietly
from backend.services.clock import aware, iso, utcnow
from backend.services.key_material import write_transaction
from backend.services.limits import Read
from backend.services.prune import bitmap_int, chunks, from_seqs, seqs_of
from backend.services.snapshots import OBJECT_LIMITS, SnapshotService
from backend.settings import Settings
from backend.snapshot_schemas import ObjectSlotOut, RepositoryOut
from desktop_agent.engine.repo_protocol import decode_bitmap, encode_bitmap

__all__ = ["CompactionRound", "CompactionService"]

log = logging.getLogger("backapp.compaction")

LEASE = timedelta(hours=1)
"""A running compaction is abandoned when its agent has not called for this long."""
REQUEST_LOOKBACK = timedelta(days=7)
"""How far back a round looks for pruned snapshots (a round that never ran for longer misses
nothing worse than one compaction request)."""
_REQUESTED_SQL = "SELECT compact_requested_at FROM backapp_repository WHERE agent = {}"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_METADATA_NOW = 50
"""Metadata objects a commit rewrites itself; the catalog round writes the others."""


@dataclass
class CompactionRound:
    """What one maintenance round did about compaction."""

    requested: list[str] = field(default_factory=list)
    """Repositories whose agent is now asked to compact."""
    committed: list[dict[str, Any]] = field(default_factory=list)
    """Compactions committed since the previous round's report."""
    abandoned: int = 0
    """Running compactions whose agent went quiet (their new packs are pruned later)."""

    def to_json(self, packs_freed: int, bytes_freed: int) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "committed": self.committed,
            "abandoned": self.abandoned,
            "packsFreed": packs_freed,
            "bytesFreed": bytes_freed,
        }


def _bits_bytes(bits: int) -> bytes:
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    return zlib.compress(raw, 6) if raw else b""


def _wire(stored: bytes | None) -> str:
    return base64.b64encode(stored).decode("ascii") if stored else ""


class CompactionService:
    def __init__(
        self,
        settings: Settings,
        snapshots: SnapshotService | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self._snapshots = snapshots
        """The agent's side (``start`` … ``commit``) needs it; the maintenance round does not."""
        self.clock = clock

    @property
    def snapshots(self) -> SnapshotService:
        if self._snapshots is None:
            raise RuntimeError("this CompactionService serves no agent requests")
        return self._snapshots

    # --- asking ---------------------------------------------------------------------------------

    async def requested_for(self, agent: AgentIdentity, read: Read) -> CompactRequestOut | None:
        """For the heartbeat: whether maintenance asked this agent to compact (one indexed read
        through ``read``, the hot path's way to read)."""
        rows = await read(_REQUESTED_SQL, agent.id)
        when = aware(rows[0]["compact_requested_at"]) if rows else None
        return CompactRequestOut(requested_at=iso(when) or "") if when else None

    async def round(self, now: datetime) -> CompactionRound:
        """The maintenance round's part: abandon compactions whose agent went quiet, ask for
        compaction where expired snapshots were pruned since the last one, and report the
        compactions committed since the previous report. A few set-based statements."""
        report = CompactionRound()
        gone = (
            await Compaction.update({Compaction.state: "abandoned"})
            .where((Compaction.state == "running") & (Compaction.expires_at < now))
            .returning(Compaction.id)
        )
        report.abandoned = len(gone)
        pruned = await RepoObject.select(RepoObject.repository, RepoObject.deleted_at).where(
            (RepoObject.kind == "snapshot")
            & (RepoObject.state == "deleted")
            & (RepoObject.deleted_at >= now - REQUEST_LOOKBACK)
        )
        newest: dict[Any, datetime] = {}
        for r in pruned:
            when = aware(r["deleted_at"])
            if when is not None and (
                r["repository"] not in newest or when > newest[r["repository"]]
            ):
                newest[r["repository"]] = when
        due: list[Any] = []
        for chunk in chunks(list(newest)):
            rows = await Repository.select(
                Repository.id, Repository.compacted_at, Repository.compact_requested_at
            ).where(Repository.id.is_in(list(chunk)))
            for r in rows:
                last = aware(r["compacted_at"])
                if r["compact_requested_at"] is None and (last is None or newest[r["id"]] > last):
                    due.append(r["id"])
        for chunk in chunks(due):
            asked = (
                await Repository.update({Repository.compact_requested_at: now})
                .where(Repository.id.is_in(list(chunk)) & Repository.compact_requested_at.is_null())
                .returning(Repository.id)
            )
            report.requested += [str(r["id"]) for r in asked]
        done = (
            await Compaction.update({Compaction.reported: True})
            .where((Compaction.state == "committed") & (Compaction.reported == False))  # noqa: E712
            .returning(
                Compaction.id,
                Compaction.repository,
                Compaction.packs_retired,
                Compaction.bytes_retired,
                Compaction.packs_written,
                Compaction.bytes_written,
                Compaction.release_at,
            )
        )
        report.committed = [
            {
                "id": str(r["id"]),
                "repository": str(r["repository"]),
                "packsRetired": int(r["packs_retired"]),
                "bytesRetired": int(r["bytes_retired"]),
                "packsWritten": int(r["packs_written"]),
                "bytesWritten": int(r["bytes_written"]),
                "releaseAt": iso(r["release_at"]),
            }
            for r in done
        ]
        return report

    # --- the agent's run ------------------------------------------------------------------------

    async def start(self, agent: AgentIdentity) -> CompactStartResponse:
        """``POST /api/agent/repo/compact/start``: open a compaction of this agent's repository
        (one at a time); the live snapshots it may rewrite and the packs it may read."""
        repo = await self.snapshots._repository(agent)
        now = self.clock()
        # One compaction at a time: a new start supersedes a running one (its process died,
        # or it is still working: its commit is then refused, and it changed nothing).
        await Compaction.update(
            {Compaction.state: "abandoned", Compaction.error: "superseded by a newer run"}
        ).where((Compaction.repository == repo["id"]) & (Compaction.state == "running"))
        snaps = await Snapshot.select(
            Snapshot.backup, Snapshot.packs, Snapshot.backup.config.as_alias("config")
        ).where((Snapshot.repository == repo["id"]) & (Snapshot.backup.status == "completed"))
        live = await RepoObject.select(RepoObject.seq).where(
            (RepoObject.repository == repo["id"])
            & (RepoObject.kind == "data")
            & RepoObject.state.is_in(["pending", "stored"])
        )
        comp_id = uuid.uuid4()
        await Compaction.insert(
            Compaction(
                id=comp_id,
                repository=repo["id"],
                state="running",
                started_at=now,
                expires_at=now + LEASE,
                snapshots=[str(s["backup"]) for s in snaps],
                held=b"",
                previous={},
            )
        )
        log.info("compaction %s of repository %s started", comp_id, repo["id"])
        return CompactStartResponse(
            compaction_id=str(comp_id),
            expires_at=iso(now + LEASE) or "",
            requested_at=iso(repo.get("compact_requested_at")),
            repository=RepositoryOut(
                agent_id=str(agent.id),
                initialized=bool(repo["initialized"]),
                pack_count=int(repo["pack_count"]),
                live_packs=encode_bitmap(int(r["seq"]) for r in live if r["seq"] is not None),
            ),
            snapshots=[
                CompactSnapshotOut(
                    backup_id=str(s["backup"]),
                    config_id=str(s["config"]) if s["config"] else None,
                    packs=_wire(s["packs"]),
                )
                for s in snaps
            ],
        )

    async def _running(
        self, agent: AgentIdentity, compaction_id: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """This agent's compaction and repository; a running one's lease is extended."""
        repo = await self.snapshots._repository(agent)
        row: dict[str, Any] | None = (
            await Compaction.select()
            .where(
                (Compaction.id == uuid.UUID(compaction_id)) & (Compaction.repository == repo["id"])
            )
            .first()
        )
        if row is None:
            raise NotFound("compactionId: no such compaction of this agent's repository")
        now = self.clock()
        if row["state"] == "running" and aware(row["expires_at"]) < now:  # type: ignore[operator]
            await Compaction.update({Compaction.state: "abandoned"}).where(
                (Compaction.id == row["id"]) & (Compaction.state == "running")
            )
            row["state"] = "abandoned"
        return row, repo

    async def _extend(self, row: dict[str, Any]) -> None:
        await Compaction.update({Compaction.expires_at: self.clock() + LEASE}).where(
            (Compaction.id == row["id"]) & (Compaction.state == "running")
        )

    async def objects(
        self, agent: AgentIdentity, req: CompactObjectsRequest
    ) -> list[ObjectSlotOut]:
        """``POST /api/agent/repo/compact/objects``: PUT URLs for the new packs and index objects
        (content-addressed, named by their SHA-256)."""
        row, _ = await self._running(agent, req.compaction_id)
        if row["state"] != "running":
            raise Conflict(f"compactionId: this compaction is {row['state']}; start a new one")
        for i, obj in enumerate(req.objects):
            where = f"objects[{i}]"
            if obj.kind not in ("data", "index"):
                raise InvalidInput(
                    f"{where}.kind: a compaction uploads packs (data) and index objects only",
                    field="kind",
                )
            if not _HEX64.fullmatch(obj.name) or obj.name != obj.sha256:
                raise InvalidInput(
                    f"{where}.name: a {obj.kind} object is named by its SHA-256", field="name"
                )
            if obj.size > OBJECT_LIMITS[obj.kind]:
                raise InvalidInput(
                    f"{where}.size: a {obj.kind} object is at most {OBJECT_LIMITS[obj.kind]} bytes",
                    field="size",
                )
        await self._extend(row)
        return await self.snapshots.slots(agent, str(row["id"]), req.objects)

    async def abort(self, agent: AgentIdentity, req: CompactAbortRequest) -> str:
        """``POST /api/agent/repo/compact/abort``: the agent gave up; nothing changes (what it
        uploaded is pruned later). The request stays, for a later run."""
        row, _ = await self._running(agent, req.compaction_id)
        if row["state"] != "running":
            return str(row["state"])
        await Compaction.update(
            {Compaction.state: "failed", Compaction.error: req.reason or "stopped by the agent"}
        ).where((Compaction.id == row["id"]) & (Compaction.state == "running"))
        return "failed"

    async def commit(
        self, agent: AgentIdentity, req: CompactCommitRequest
    ) -> CompactCommitResponse:
        """``POST /api/agent/repo/compact/commit``: check, then switch the snapshots to their new
        bitmaps and retire the packs nobody names any more (one transaction). Idempotent; a 4xx
        changes nothing. An empty commit says there was nothing worth compacting."""
        row, repo = await self._running(agent, req.compaction_id)
        if row["state"] == "committed":
            return _answer(row)
        if row["state"] != "running":
            raise Conflict(
                f"compactionId: this compaction is {row['state']}; nothing was changed, start a "
                "new one"
            )
        repo_id = repo["id"]
        new = await self._own_objects(agent, row, repo_id, "data", req.packs)
        await self._own_objects(agent, row, repo_id, "index", req.indexes)
        new_seqs = {int(r["seq"]) for r in new}
        allowed = set(json_value(row["snapshots"]) or [])
        wanted: dict[str, int] = {}
        for i, item in enumerate(req.snapshots):
            if item.backup_id not in allowed:
                raise InvalidInput(
                    f"snapshots[{i}].backupId: not a snapshot this compaction started with",
                    field="snapshots",
                )
            try:
                seqs = decode_bitmap(item.packs, limit=int(repo["pack_count"]))
            except ValueError as exc:
                raise InvalidInput(f"snapshots[{i}].packs: {exc}", field="snapshots") from None
            wanted[item.backup_id] = from_seqs(seqs)
        snaps = await Snapshot.select(
            Snapshot.id,
            Snapshot.backup,
            Snapshot.packs,
            Snapshot.index_names,
            Snapshot.backup.status.as_alias("status"),
        ).where(Snapshot.repository == repo_id)
        # A snapshot that expired meanwhile keeps its bitmap: no live one depends on it.
        changing = [s for s in snaps if str(s["backup"]) in wanted and s["status"] == "completed"]
        others = [s for s in snaps if str(s["backup"]) not in wanted and s["status"] == "completed"]
        named = 0
        for s in changing:
            named |= wanted[str(s["backup"])]
        await self._check_named(agent, repo_id, named, new_seqs)
        before = 0
        for s in changing:
            before |= bitmap_int(s["packs"])
        removed = before & ~named
        removed_rows = await _data_rows(repo_id, seqs_of(removed))
        removed_bytes = sum(int(r["size"]) for r in removed_rows)
        written = sum(int(r["size"]) for r in new)
        if written > removed_bytes:
            raise InvalidInput(
                f"packs: the new packs ({written} bytes) are larger than the packs they replace "
                f"({removed_bytes} bytes); a compaction only ever shrinks a repository",
                field="packs",
            )
        still = 0
        for s in others:
            still |= bitmap_int(s["packs"])
        retired = removed & ~still
        retired_rows = [r for r in removed_rows if not (still >> int(r["seq"])) & 1]
        now = self.clock()
        release = now + timedelta(seconds=self.settings.compact_grace_seconds)
        indexes = list(dict.fromkeys(req.indexes))
        async with write_transaction():
            for s in changing:
                bits = wanted[str(s["backup"])]
                names = list(json_value(s["index_names"]) or [])
                if bits & from_seqs(new_seqs):
                    names += [n for n in indexes if n not in names]
                await Snapshot.update(
                    {
                        Snapshot.packs: _bits_bytes(bits),
                        Snapshot.pack_total: bin(bits).count("1"),
                        Snapshot.index_names: names,
                    }
                ).where(Snapshot.id == s["id"])
            for chunk in chunks([r["id"] for r in retired_rows]):
                await RepoObject.update({RepoObject.state: "retired"}).where(
                    RepoObject.id.is_in(list(chunk)) & (RepoObject.state == "stored")
                )
            values: dict[Any, Any] = {
                Compaction.state: "committed",
                Compaction.committed_at: now,
                Compaction.held: _bits_bytes(retired),
                Compaction.release_at: release if retired else None,
                Compaction.previous: {str(s["backup"]): _wire(s["packs"]) for s in changing},
                Compaction.packs_retired: len(retired_rows),
                Compaction.bytes_retired: sum(int(r["size"]) for r in retired_rows),
                Compaction.packs_written: len(new),
                Compaction.bytes_written: written,
            }
            mine = (
                await Compaction.update(values)
                .where((Compaction.id == row["id"]) & (Compaction.state == "running"))
                .returning(Compaction.id)
            )
            if not mine:  # superseded meanwhile: undo it all (the transaction rolls back)
                raise Conflict("compactionId: this compaction was superseded; nothing was changed")
            await Repository.update(
                {Repository.compacted_at: now, Repository.compact_requested_at: None}
            ).where(Repository.id == repo_id)
            # Their metadata objects list the old packs: the catalog round writes them again
            # if the writes below do not happen.
            for chunk in chunks([s["backup"] for s in changing]):
                await BackupLog.update({BackupLog.catalog_at: None}).where(
                    BackupLog.id.is_in(list(chunk))
                )
        for s in changing[:_METADATA_NOW]:
            await write_quietly(self.snapshots.storage, self.settings.secret_key, s["backup"])
        log.info(
            "compaction %s committed: %d snapshot(s), %d pack(s) written, %d retired",
            row["id"],
            len(changing),
            len(new),
            len(retired_rows),
        )
        final = await Compaction.select().where(Compaction.id == row["id"]).first()
        assert final is not None
        final["_snapshots"] = len(changing)
        return _answer(final)

    async def _own_objects(
        self,
        agent: AgentIdentity,
        row: dict[str, Any],
        repo_id: Any,
        kind: str,
        names: Sequence[str],
    ) -> list[dict[str, Any]]:
        """The rows of objects this compaction uploaded, each checked in storage: 400 for a name
        it never uploaded, 409 (naming them) for those not in storage."""
        unique = sorted(set(names))
        rows: list[dict[str, Any]] = []
        for chunk in chunks(unique):
            rows += await RepoObject.select().where(
                (RepoObject.repository == repo_id)
                & (RepoObject.kind == kind)
                & RepoObject.name.is_in(list(chunk))
            )
        mine = {r["name"]: r for r in rows if r["backup"] == str(row["id"])}
        foreign = [n for n in unique if n not in mine]
        if foreign:
            what = "packs" if kind == "data" else "indexes"
            raise InvalidInput(
                f"{what}: {len(foreign)} {kind} object(s) were not uploaded by this compaction "
                f"(first: {foreign[0]}); nothing was changed",
                field=what,
            )
        gone = [n for n, r in mine.items() if r["state"] not in ("pending", "stored")]
        pending = [r for r in mine.values() if r["state"] == "pending"]
        absent = await self.snapshots._confirm(await _repo_row(repo_id), pending)
        missing = gone + [r["name"] for r in absent]
        if missing:
            raise Conflict(
                f"{len(missing)} object(s) of this compaction are not in storage; upload them and "
                "commit again (nothing was changed)",
                extra={"missing": [{"kind": kind, "name": n} for n in missing[:1000]]},
            )
        return list(mine.values())

    async def _check_named(
        self, agent: AgentIdentity, repo_id: Any, named: int, new_seqs: set[int]
    ) -> None:
        """Every pack the new bitmaps name is stored (or one of this compaction's own)."""
        seqs = [s for s in seqs_of(named) if s not in new_seqs]
        rows = await _data_rows(repo_id, seqs)
        pending = [r for r in rows if r["state"] == "pending"]
        absent = {r["id"] for r in await self.snapshots._confirm(await _repo_row(repo_id), pending)}
        ok = {
            int(r["seq"])
            for r in rows
            if r["state"] == "stored" or (r["state"] == "pending" and r["id"] not in absent)
        }
        bad = [s for s in seqs if s not in ok]
        if bad:
            raise Conflict(
                f"snapshots: the new bitmaps name {len(bad)} pack(s) that are not stored "
                f"(first: #{bad[0]}); nothing was changed",
                field="snapshots",
            )

    # --- undo -----------------------------------------------------------------------------------

    async def undo(self, compaction_id: str) -> int:
        """Put back the bitmaps a committed compaction replaced (while its retired packs are
        still held) and its retired packs to ``stored``. Returns how many snapshots changed."""
        row = await Compaction.select().where(Compaction.id == uuid.UUID(compaction_id)).first()
        if row is None:
            raise NotFound("no such compaction")
        if row["state"] != "committed":
            raise Conflict(f"this compaction is {row['state']}, not committed")
        previous: dict[str, str] = json_value(row["previous"]) or {}
        held = bitmap_int(row["held"])
        rows = await _data_rows(row["repository"], seqs_of(held))
        if any(r["state"] == "deleted" for r in rows):
            raise Conflict("its retired packs are already deleted: too late to undo")
        async with write_transaction():
            for backup, packs in previous.items():
                await Snapshot.update({Snapshot.packs: base64.b64decode(packs)}).where(
                    (Snapshot.backup == uuid.UUID(backup))
                    & (Snapshot.repository == row["repository"])
                )
            for chunk in chunks([r["id"] for r in rows]):
                await RepoObject.update({RepoObject.state: "stored"}).where(
                    RepoObject.id.is_in(list(chunk))
                    & RepoObject.state.is_in(["retired", "deleting"])
                )
            await Compaction.update(
                {Compaction.state: "undone", Compaction.release_at: None, Compaction.held: b""}
            ).where(Compaction.id == row["id"])
        return len(previous)


async def _data_rows(repo_id: Any, seqs: Sequence[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for chunk in chunks(list(seqs)):
        rows += await RepoObject.select(
            RepoObject.id,
            RepoObject.kind,
            RepoObject.seq,
            RepoObject.size,
            RepoObject.state,
            RepoObject.name,
        ).where(
            (RepoObject.repository == repo_id)
            & (RepoObject.kind == "data")
            & RepoObject.seq.is_in(list(chunk))
        )
    return rows


def _answer(row: dict[str, Any]) -> CompactCommitResponse:
    return CompactCommitResponse(
        status="committed",
        snapshots=int(row.get("_snapshots", len(json_value(row["previous"]) or {}))),
        packs_written=int(row["packs_written"]),
        bytes_written=int(row["bytes_written"]),
        packs_retired=int(row["packs_retired"]),
        bytes_retired=int(row["bytes_retired"]),
        release_at=iso(row["release_at"]),
    )


async def _repo_row(repo_id: Any) -> dict[str, Any]:
    """The repository row whose objects are checked (its prefix may be an older machine's: a
    continued repository keeps its objects where they are)."""
    row: dict[str, Any] | None = await Repository.select().where(Repository.id == repo_id).first()
    if row is None:
        raise Conflict("the repository is gone; nothing was changed")
    return row
