"""Pruning: the server deletes the repository objects no live snapshot needs.

A snapshot's commit names the packs it needs (a bitmap over the repository's pack sequence numbers,
docs/repository-format.md). A pack is **unused** when no ``completed`` snapshot's bitmap names it.
Unused packs are deleted from storage and their rows marked ``deleted``; so are the snapshot
objects of expired snapshots and the index objects of expired snapshots whose packs are all
deleted. Packs no snapshot ever named (left by a failed or interrupted run, which the next run
may still reuse) are kept for ``BACKAPP_PRUNE_GRACE_SECONDS`` first.

Never racing a running snapshot: a running snapshot may use any pack that was not deleted when it
started (its cache knows them), and may complete at any moment. So for each repository:

1. a repository with a running snapshot is skipped this round;
2. the unused packs are marked ``deleting`` (``snapshot/start`` no longer lists them as live, so
   a snapshot that starts from now on forgets them, and ``snapshot/objects`` refuses to hand one
   out as existing);
3. then the repository is looked at again: if a snapshot is running or one completed since step 1,
   the marks are undone (that snapshot may use the packs) and the repository waits for the next
   round;
4. only then are the objects deleted from storage, and marked ``deleted``. A storage error puts
   the row back to what it was, for the next round.

Compaction (``services/compaction.py``) works with this: a repository whose compaction is
running, or committed during the round, is left for the next round like one with a running
snapshot; the packs a compaction ``retired`` count as live until its grace window ends (its
``held`` bitmap), and one that a snapshot names again is put back to ``stored``.

Interrupted at any point, a round leaves no referenced object deleted: a row left ``deleting`` is
either deleted by the next round, or put back to ``stored`` if a snapshot that started before the
mark needs it after all. Packs are compared as Python integers (bitmaps OR-ed), in batches of
repositories.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from backend.backups.tables import BackupLog
from backend.repos.tables import Compaction, RepoObject, Repository, Snapshot
from backend.services.clock import aware, utcnow
from backend.services.keys import repository_key
from backend.storage import ObjectStoreError, Storage

__all__ = ["Bits", "PruneReport", "PruneService", "bitmap_int", "chunks", "from_seqs", "seqs_of"]

log = logging.getLogger("backapp.prune")

#: Rows per ``IN (…)`` list (far below every engine's limit on bound parameters), and
#: repositories per batch.
BATCH = 500
REPO_BATCH = 50
_DELETE_CONCURRENCY = 16
T = TypeVar("T")


def bitmap_int(packs: bytes | None) -> int:
    """A stored pack bitmap (zlib-compressed bits) as an integer whose bit ``n`` is pack ``n``."""
    if not packs:
        return 0
    return int.from_bytes(zlib.decompress(packs), "little")


def seqs_of(bits: int) -> list[int]:
    """The set bits of ``bits``, in order (linear in the bitmap's size)."""
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    return [(i << 3) | b for i, byte in enumerate(raw) if byte for b in range(8) if byte >> b & 1]


def from_seqs(seqs: Iterable[int]) -> int:
    """The integer whose bits are ``seqs``."""
    values = list(seqs)
    raw = bytearray((max(values) >> 3) + 1 if values else 0)
    for n in values:
        raw[n >> 3] |= 1 << (n & 7)
    return int.from_bytes(raw, "little")


class Bits:
    """Membership tests on a bitmap without shifting a million-bit integer for each one."""

    def __init__(self, bits: int) -> None:
        self.raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")

    def __contains__(self, seq: int) -> bool:
        i = seq >> 3
        return i < len(self.raw) and bool(self.raw[i] >> (seq & 7) & 1)


@dataclass
class PruneReport:
    packs: int = 0
    """Packs deleted."""
    indexes: int = 0
    """Index objects deleted."""
    snapshots: int = 0
    """Snapshot objects (of expired snapshots) deleted."""
    bytes_freed: int = 0
    """Bytes of every object deleted."""
    deferred: list[str] = field(default_factory=list)
    """Ids of the repositories left for the next round (a snapshot was running there)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(storage key, reason) of deletions that failed; the next round retries them."""
    deleted: list[dict[str, Any]] = field(default_factory=list)
    """``{"repository", "kind", "name", "size"}`` of every object deleted."""
    compacted_packs: int = 0
    """Of ``packs``: those a compaction had retired (replaced by smaller ones)."""
    compacted_bytes: int = 0
    """Of ``bytes_freed``: the bytes of those packs."""


def chunks(items: list[T], size: int = BATCH) -> list[list[T]]:
    """``items`` in slices of at most ``size``: one ``IN (…)`` list each."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class PruneService:
    def __init__(self, storage: Storage, grace_seconds: float = 86400.0) -> None:
        self.storage = storage
        self.grace = timedelta(seconds=grace_seconds)

    async def run(self, now: datetime | None = None) -> PruneReport:
        """One pruning round over every repository."""
        now = now or utcnow()
        report = PruneReport()
        repos = await Repository.select(
            Repository.id, Repository.user, Repository.agent, Repository.prefix_agent
        )
        for batch in chunks(repos, REPO_BATCH):
            await self._batch(list(batch), now, report)
        return report

    async def _running_agents(self, agents: Sequence[Any]) -> set[Any]:
        rows = await BackupLog.select(BackupLog.agent).where(
            BackupLog.agent.is_in(list(agents))
            & (BackupLog.status == "running")
            & (BackupLog.backup_type == "incremental")
        )
        return {r["agent"] for r in rows}

    async def _compacting(self, repos: Sequence[dict[str, Any]], since: datetime) -> set[Any]:
        """The agents of the repositories with a compaction running, or committed since
        ``since``: their snapshots' bitmaps may be changing under this round."""
        agent_of = {r["id"]: r["agent"] for r in repos}
        rows = await Compaction.select(Compaction.repository).where(
            Compaction.repository.is_in(list(agent_of))
            & (
                ((Compaction.state == "running") & (Compaction.expires_at > since))
                | ((Compaction.state == "committed") & (Compaction.committed_at >= since))
            )
        )
        return {agent_of[r["repository"]] for r in rows}

    async def _held(self, repo_ids: Sequence[Any], now: datetime) -> dict[Any, int]:
        """The packs that compactions retired and still hold (their grace window is not over)."""
        rows = await Compaction.select(Compaction.repository, Compaction.held).where(
            Compaction.repository.is_in(list(repo_ids))
            & (Compaction.state == "committed")
            & (Compaction.release_at > now)
        )
        held: dict[Any, int] = {}
        for r in rows:
            held[r["repository"]] = held.get(r["repository"], 0) | bitmap_int(r["held"])
        return held

    async def _snapshots(self, repo_ids: Sequence[Any]) -> list[dict[str, Any]]:
        return list(
            await Snapshot.select(
                Snapshot.id,
                Snapshot.repository,
                Snapshot.packs,
                Snapshot.index_names,
                Snapshot.backup,
                Snapshot.backup.status.as_alias("status"),
            ).where(Snapshot.repository.is_in(list(repo_ids)))
        )

    async def _batch(self, repos: list[dict[str, Any]], now: datetime, report: PruneReport) -> None:
        since = utcnow()
        running = await self._running_agents([r["agent"] for r in repos])
        running |= await self._compacting(repos, since)
        for r in repos:
            if r["agent"] in running:
                report.deferred.append(str(r["id"]))
        repos = [r for r in repos if r["agent"] not in running]
        if not repos:
            return
        by_id = {r["id"]: r for r in repos}
        snaps = await self._snapshots(list(by_id))
        seen = {s["id"] for s in snaps}
        live: dict[Any, int] = {rid: 0 for rid in by_id}
        named: dict[Any, int] = {rid: 0 for rid in by_id}
        for s in snaps:
            bits = bitmap_int(s["packs"])
            named[s["repository"]] |= bits
            if s["status"] == "completed":
                live[s["repository"]] |= bits
        objects = await RepoObject.select(
            RepoObject.id,
            RepoObject.repository,
            RepoObject.seq,
            RepoObject.size,
            RepoObject.name,
            RepoObject.state,
            RepoObject.created_at,
        ).where(
            RepoObject.repository.is_in(list(by_id))
            & (RepoObject.kind == "data")
            & RepoObject.state.is_in(["stored", "pending", "deleting", "retired"])
        )
        held = await self._held(list(by_id), now)
        held_bits = {rid: Bits(held.get(rid, 0)) for rid in by_id}
        live_bits = {rid: Bits(bits) for rid, bits in live.items()}
        named_bits = {rid: Bits(bits) for rid, bits in named.items()}
        doomed: list[dict[str, Any]] = []
        revive: list[Any] = []
        for o in objects:
            if o["seq"] is None:
                continue
            seq = int(o["seq"])
            if seq in live_bits[o["repository"]]:
                if o["state"] in ("deleting", "retired"):
                    # Marked by a round that was interrupted, and a snapshot that started before
                    # the mark needed it: it is still in storage (only step 4 deletes). Or
                    # retired by a compaction, and named again by a snapshot since.
                    revive.append(o["id"])
                continue
            if seq in held_bits[o["repository"]]:
                continue  # retired by a compaction whose grace window is not over
            fresh = (aware(o["created_at"]) or now) > now - self.grace
            if (
                fresh
                and o["state"] != "retired"  # a compaction replaced it: it was in snapshots
                and (seq not in named_bits[o["repository"]] or o["state"] == "pending")
            ):
                # Never part of a snapshot: a failed or interrupted run's, which the next run
                # may reuse (a pending one may even be on its way up from a dying process).
                continue
            doomed.append(o)
        for chunk in chunks(revive):
            await RepoObject.update({RepoObject.state: "stored"}).where(
                RepoObject.id.is_in(list(chunk)) & RepoObject.state.is_in(["deleting", "retired"])
            )
        # Step 2: mark.
        previous = {o["id"]: o["state"] for o in doomed}
        for state in ("stored", "pending", "retired"):
            ids = [o["id"] for o in doomed if o["state"] == state]
            for chunk in chunks(ids):
                await RepoObject.update({RepoObject.state: "deleting"}).where(
                    RepoObject.id.is_in(list(chunk)) & (RepoObject.state == state)
                )
        # Step 3: look again (also before deleting the snapshot and index objects below).
        touched = list(by_id)
        again_running = await self._running_agents([by_id[rid]["agent"] for rid in touched])
        again_running |= await self._compacting(repos, since)
        now_snaps = await Snapshot.select(Snapshot.id, Snapshot.repository).where(
            Snapshot.repository.is_in(touched)
        )
        changed = {s["repository"] for s in now_snaps if s["id"] not in seen}
        changed |= {rid for rid in touched if by_id[rid]["agent"] in again_running}
        if changed:
            await self._undo([o for o in doomed if o["repository"] in changed], previous)
            report.deferred += [str(rid) for rid in changed]
            doomed = [o for o in doomed if o["repository"] not in changed]
        # Step 4: delete.
        await self._delete(
            [(by_id[o["repository"]], "data", o) for o in doomed], previous, now, report
        )
        # A snapshot that started meanwhile may be reading its parent's objects: wait too.
        calm = [s for s in snaps if s["repository"] not in changed]
        await self._snapshot_objects(by_id, calm, now, report)

    async def _undo(self, rows: Sequence[dict[str, Any]], previous: dict[Any, str]) -> None:
        for state in ("stored", "pending", "retired"):
            ids = [o["id"] for o in rows if previous.get(o["id"]) == state]
            for chunk in chunks(ids):
                await RepoObject.update({RepoObject.state: state}).where(
                    RepoObject.id.is_in(list(chunk)) & (RepoObject.state == "deleting")
                )
        # Rows found already ``deleting`` (an interrupted round) are in storage: stored.
        rest = [
            o["id"] for o in rows if previous.get(o["id"]) not in ("stored", "pending", "retired")
        ]
        for chunk in chunks(rest):
            await RepoObject.update({RepoObject.state: "stored"}).where(
                RepoObject.id.is_in(list(chunk)) & (RepoObject.state == "deleting")
            )

    async def _delete(
        self,
        items: Sequence[tuple[dict[str, Any], str, dict[str, Any]]],
        previous: dict[Any, str],
        now: datetime,
        report: PruneReport,
    ) -> None:
        """Delete ``(repository, kind, row)`` objects from storage, then mark them ``deleted``;
        a failure puts the row back to its ``previous`` state."""
        if not items:
            return
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def one(repo: dict[str, Any], kind: str, row: dict[str, Any]) -> str | None:
            key = repository_key(repo, kind, row["name"])
            async with gate:
                try:
                    await self.storage.delete(key)
                except ObjectStoreError as exc:
                    log.warning("prune: could not delete %s: %s", key, exc)
                    report.failed.append((key, str(exc)))
                    return None
            return key

        keys = await asyncio.gather(*(one(*item) for item in items))
        done = [item for item, key in zip(items, keys, strict=True) if key is not None]
        failed = [item[2] for item, key in zip(items, keys, strict=True) if key is None]
        await self._undo([r for r in failed if r.get("state") is not None], previous)
        for chunk in chunks(done):
            ids = [row["id"] for _, _, row in chunk]
            await RepoObject.update(
                {RepoObject.state: "deleted", RepoObject.deleted_at: now}
            ).where(RepoObject.id.is_in(ids) & (RepoObject.state != "deleted"))
        for repo, kind, row in done:
            size = int(row["size"] or 0)
            report.bytes_freed += size
            if kind == "data":
                report.packs += 1
                if previous.get(row["id"]) == "retired":
                    report.compacted_packs += 1
                    report.compacted_bytes += size
            elif kind == "index":
                report.indexes += 1
            else:
                report.snapshots += 1
            report.deleted.append(
                {"repository": str(repo["id"]), "kind": kind, "name": row["name"], "size": size}
            )
            log.info("prune: deleted %s %s (%d bytes)", kind, row["name"], size)

    async def _snapshot_objects(
        self,
        by_id: dict[Any, dict[str, Any]],
        snaps: Sequence[dict[str, Any]],
        now: datetime,
        report: PruneReport,
    ) -> None:
        """The snapshot objects of expired snapshots, and the index objects of expired snapshots
        whose packs are all deleted (and that no live snapshot names)."""
        expired = [s for s in snaps if s["status"] == "expired"]
        if not expired:
            return
        live_indexes = {
            (s["repository"], name)
            for s in snaps
            if s["status"] == "completed"
            for name in (s["index_names"] or [])
        }
        # Which packs of each repository are gone for good.
        repo_ids = list({s["repository"] for s in expired})
        deleted_rows = await RepoObject.select(RepoObject.repository, RepoObject.seq).where(
            RepoObject.repository.is_in(repo_ids)
            & (RepoObject.kind == "data")
            & (RepoObject.state == "deleted")
        )
        gone_seqs: dict[Any, list[int]] = {rid: [] for rid in repo_ids}
        for r in deleted_rows:
            if r["seq"] is not None:
                gone_seqs[r["repository"]].append(int(r["seq"]))
        gone = {rid: from_seqs(seqs) for rid, seqs in gone_seqs.items()}
        wanted: set[tuple[Any, str, str]] = set()
        for s in expired:
            rid = s["repository"]
            wanted.add((rid, "snapshot", str(s["backup"])))
            bits = bitmap_int(s["packs"])
            if bits & ~gone[rid] == 0:
                for name in s["index_names"] or []:
                    if (rid, name) not in live_indexes:
                        wanted.add((rid, "index", name))
        names = sorted({name for _, _, name in wanted})
        rows: list[dict[str, Any]] = []
        for chunk in chunks(names):
            rows += await RepoObject.select(
                RepoObject.id,
                RepoObject.repository,
                RepoObject.kind,
                RepoObject.name,
                RepoObject.size,
            ).where(
                RepoObject.repository.is_in(repo_ids)
                & RepoObject.name.is_in(list(chunk))
                & RepoObject.kind.is_in(["snapshot", "index"])
                & RepoObject.state.is_in(["stored", "pending"])
            )
        items = [
            (by_id[r["repository"]], r["kind"], r)
            for r in rows
            if (r["repository"], r["kind"], r["name"]) in wanted
        ]
        await self._delete(items, {}, now, report)
