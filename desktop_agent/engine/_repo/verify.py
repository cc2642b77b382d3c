"""``backapp-agent check``: is the newest snapshot of each config whole, and are its bytes good?

Structure (always): each snapshot object opens with this machine's key; every folder listing
(tree) below it opens and matches its id; every tree and chunk it names is in the repository's
index; every pack the index points to for them is listed by the server as stored, and its header,
read from storage (the pack's tail), lists each of those blobs where the index says.

Data (``read_percent`` > 0): that share of the packs (a random sample, at least one) is downloaded
whole: the pack must match its name (SHA-256), and every blob in it must decrypt and match its
keyed id. This is what finds a flipped byte that sizes and listings cannot see.

Problems name packs and blobs by id; the paths of affected files are kept for this machine's
output only (they never go to the server).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import AgentError
from ..repo_protocol import ReadSlot
from .cache import BlobLocation
from .errors import CorruptObject, MissingObject, RepositoryError
from .format import BlobType
from .pack import PackEntry, header_length, open_entry, read_pack_header
from .repository import Repository
from .restore import display

log = logging.getLogger("desktop_agent.engine.repo")

_TAIL = 64 * 1024
MAX_PROBLEMS = 1000
"""Problems one report may carry (the server's limit)."""
_MAX_LISTED = 20
"""Problems of one kind listed one by one for a config; the rest are counted in one more."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: ``kind`` (``missing_snapshot``, ``missing_tree``, ``missing_blob``,
    ``missing_pack``, ``damaged_pack``, ``damaged_blob``, ``unreadable``), the id of the object
    it concerns, and what happened in words."""

    kind: str
    name: str
    message: str
    paths: tuple[str, ...] = ()
    """Files or folders it affects (this machine's output only)."""

    def to_json(self, *, paths: bool = False) -> dict[str, Any]:
        # The server takes messages of at most 1000 characters (a storage error can be long).
        message = self.message if len(self.message) <= 1000 else self.message[:999] + "…"
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "message": message}
        if paths and self.paths:
            out["paths"] = list(self.paths)
        return out


@dataclass(slots=True)
class ConfigCheck:
    """What the check found for one config's newest snapshot."""

    config_id: str
    config_name: str
    backup_id: str
    trees: int = 0
    blobs: int = 0
    packs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    _packs: set[str] = field(default_factory=set, repr=False)
    _paths: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict, repr=False)
    """Where each tree and chunk is used (the first place found), for the affected paths."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self, *, paths: bool = False) -> dict[str, Any]:
        """The result as ``POST /api/agent/repo/check`` takes it (``paths`` adds the affected
        paths, for this machine's own output)."""
        out: dict[str, Any] = {
            "configId": self.config_id,
            "backupId": self.backup_id,
            "ok": self.ok,
            "trees": self.trees,
            "blobs": self.blobs,
            "packs": self.packs,
            "packsRead": self.packs_read,
            "bytesRead": self.bytes_read,
            "problems": [p.to_json(paths=paths) for p in self.problems[:MAX_PROBLEMS]],
        }
        if paths:
            out["configName"] = self.config_name
        return out


@dataclass(frozen=True, slots=True)
class Target:
    """A snapshot to check: the newest of a config."""

    config_id: str
    config_name: str
    backup_id: str


ReadProgress = Callable[[int, int, int, int], None]
"""Called with packs read, packs to read, bytes read and bytes to read."""


class RepoChecker:
    """Checks snapshots of one repository (see the module's docstring)."""

    def __init__(
        self,
        repo: Repository,
        *,
        workers: int = 4,
        progress: ReadProgress | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.repo = repo
        self.workers = workers
        self.progress = progress
        self.rng = rng or random.SystemRandom()
        self._lock = threading.Lock()

    def run(self, targets: Iterable[Target], read_percent: float = 0.0) -> list[ConfigCheck]:
        listed = self._listed()
        results: list[ConfigCheck] = []
        located: dict[bytes, BlobLocation] = {}
        for target in targets:
            results.append(self._structure(target, listed, located))
        needed: dict[str, set[bytes]] = {}
        for loc in located.values():
            needed.setdefault(loc.pack, set()).add(loc.entry.id)
        stored = sorted(p for p in needed if p in listed)
        share = max(0.0, min(100.0, read_percent))
        count = min(len(stored), max(1, math.ceil(len(stored) * share / 100))) if share else 0
        chosen = set(self.rng.sample(stored, count)) if count else set()
        pack_problems: dict[str, list[Problem]] = {}
        read_bytes: dict[str, int] = {}
        slots = self.repo.read_slots([("data", p) for p in stored]) if stored else {}
        total = sum(listed[p] for p in chosen)
        done = [0, 0]

        def one(pack: str) -> None:
            slot = slots.get(("data", pack))
            expected = {bid: located[bid].entry for bid in needed[pack]}
            if slot is None:
                found = [_missing(pack)]
            elif pack in chosen:
                found, size = self._read(pack, slot, expected)
                with self._lock:
                    read_bytes[pack] = size
                    done[0] += 1
                    done[1] += size
                    if self.progress is not None:
                        self.progress(done[0], len(chosen), done[1], total)
            else:
                found = self._probe(pack, slot, expected)
            if found:
                with self._lock:
                    pack_problems[pack] = found

        if self.progress is not None and chosen:
            self.progress(0, len(chosen), 0, total)
        with ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="snap-check") as pool:
            # Packs to read first: they are the long part, and the progress is about them.
            order = sorted(stored, key=lambda p: p not in chosen)
            for _ in pool.map(one, order):
                pass
        for result in results:
            result.packs_read = sum(1 for p in result._packs if p in read_bytes)
            result.bytes_read = sum(read_bytes.get(p, 0) for p in result._packs)
            for pack in sorted(result._packs):
                if pack not in listed:
                    gone = Problem(
                        "missing_pack",
                        pack,
                        f"pack {pack[:16]}… is not in the repository (the server lists it "
                        "as deleted or never stored)",
                    )
                    result.problems.append(_affecting(gone, result, needed[pack]))
                for problem in pack_problems.get(pack, ()):
                    result.problems.append(_affecting(problem, result, needed[pack]))
        return results

    # --- structure -----------------------------------------------------------------------------

    def _listed(self) -> dict[str, int]:
        """The packs the server lists as stored, with their sizes."""
        found: dict[str, int] = {}
        after: str | None = None
        while True:
            page, after = self.repo.plane.repo_list("data", after=after)
            for obj in page:
                found[obj.name] = obj.size
            if after is None:
                return found

    def _structure(
        self, target: Target, listed: dict[str, int], located: dict[bytes, BlobLocation]
    ) -> ConfigCheck:
        result = ConfigCheck(target.config_id, target.config_name, target.backup_id)
        try:
            doc = self.repo.snapshot(target.backup_id)
        except MissingObject as exc:
            result.problems.append(Problem("missing_snapshot", target.backup_id, str(exc)))
            return result
        except RepositoryError as exc:
            result.problems.append(Problem("unreadable", target.backup_id, str(exc)))
            return result
        trees: dict[bytes, tuple[bytes, ...]] = {doc.tree: ()}
        blobs: dict[bytes, tuple[bytes, ...]] = {}
        pending = [doc.tree]
        while pending:
            tree_id = pending.pop()
            where = trees[tree_id]
            try:
                tree = self.repo.tree(tree_id)
            except (MissingObject, CorruptObject) as exc:
                kind = "missing_tree" if isinstance(exc, MissingObject) else "unreadable"
                result.problems.append(
                    Problem(
                        kind,
                        tree_id.hex(),
                        f"folder listing {tree_id.hex()[:16]}…: {exc}",
                        (display(where) or "/",),
                    )
                )
                continue
            for node in tree.nodes:
                path = (*where, node.name)
                if node.type == "dir" and node.subtree is not None:
                    if node.subtree not in trees:
                        trees[node.subtree] = path
                        pending.append(node.subtree)
                elif node.type == "file":
                    for chunk in node.content:
                        blobs.setdefault(chunk, path)
        result.trees, result.blobs = len(trees), len(blobs)
        result._paths = {**trees, **blobs}
        wanted = [*trees, *blobs]
        places = self.repo.cache.locate(wanted)
        if len(places) < len(wanted):
            self.repo.rebuild_cache()
            places = self.repo.cache.locate(wanted)
        missing = [bid for bid in wanted if bid not in places]
        for bid in missing[:_MAX_LISTED]:
            kind = "folder listing" if bid in trees else "chunk"
            affected = trees.get(bid) if bid in trees else blobs.get(bid)
            result.problems.append(
                Problem(
                    "missing_blob",
                    bid.hex(),
                    f"{kind} {bid.hex()[:16]}… is in no pack of the repository's index",
                    (display(affected or ()) or "/",),
                )
            )
        if len(missing) > _MAX_LISTED:
            result.problems.append(
                Problem(
                    "missing_blob",
                    "",
                    f"and {len(missing) - _MAX_LISTED} more chunks are in no pack of the index",
                )
            )
        for bid, loc in places.items():
            expected_type = BlobType.TREE if bid in trees else BlobType.DATA
            if loc.entry.type != expected_type:
                result.problems.append(
                    Problem("unreadable", bid.hex(), f"blob {bid.hex()[:16]}… has the wrong type")
                )
            located[bid] = loc
            result._packs.add(loc.pack)
        result.packs = len(result._packs)
        return result

    # --- packs ---------------------------------------------------------------------------------

    def _probe(self, pack: str, slot: ReadSlot, expected: dict[bytes, PackEntry]) -> list[Problem]:
        """Read the pack's header from its tail and compare it with the index."""
        try:
            size = slot.size
            tail = self.repo.get(slot, start=max(0, size - _TAIL), end=size - 1)
            length = header_length(tail)
            if length + 4 > len(tail) and length + 4 <= size:
                tail = self.repo.get(slot, start=size - length - 4, end=size - 1)
            entries = read_pack_header(
                self.repo.keys, tail, pack_size=size, what=f"pack {pack[:16]}…"
            )
        except MissingObject:
            return [_missing(pack)]
        except CorruptObject as exc:
            return [Problem("damaged_pack", pack, f"pack {pack[:16]}… is damaged: {exc}")]
        except (AgentError, OSError) as exc:
            return [Problem("unreadable", pack, f"pack {pack[:16]}… could not be read: {exc}")]
        return _compare(pack, entries, expected)

    def _read(
        self, pack: str, slot: ReadSlot, expected: dict[bytes, PackEntry]
    ) -> tuple[list[Problem], int]:
        """Download the whole pack; check its name, its header, and every blob in it."""
        try:
            data = self.repo.get(slot)
        except MissingObject:
            return [_missing(pack)], 0
        except (AgentError, OSError) as exc:
            return [Problem("unreadable", pack, f"pack {pack[:16]}… could not be read: {exc}")], 0
        problems: list[Problem] = []
        if len(data) != slot.size:
            problems.append(
                Problem(
                    "damaged_pack",
                    pack,
                    f"pack {pack[:16]}… is {len(data)} bytes, not the {slot.size} stored",
                )
            )
        if hashlib.sha256(data).hexdigest() != pack:
            problems.append(
                Problem(
                    "damaged_pack",
                    pack,
                    f"pack {pack[:16]}… is damaged: its bytes no longer match its name (SHA-256)",
                )
            )
        try:
            entries = read_pack_header(self.repo.keys, data, what=f"pack {pack[:16]}…")
        except CorruptObject as exc:
            problems.append(Problem("damaged_pack", pack, f"pack {pack[:16]}…: {exc}"))
            return problems, len(data)
        view = memoryview(data)
        bad = 0
        for e in entries:
            try:
                open_entry(
                    self.repo.keys,
                    e,
                    view[e.offset : e.offset + e.length],
                    what=f"blob {e.id.hex()[:16]}… in pack {pack[:16]}…",
                )
            except CorruptObject as exc:
                bad += 1
                if bad <= _MAX_LISTED:
                    problems.append(Problem("damaged_blob", e.id.hex(), str(exc)))
        if bad > _MAX_LISTED:
            problems.append(
                Problem(
                    "damaged_blob",
                    pack,
                    f"and {bad - _MAX_LISTED} more blobs in pack {pack[:16]}… fail verification",
                )
            )
        problems.extend(_compare(pack, entries, expected))
        return problems, len(data)


def _affecting(problem: Problem, result: ConfigCheck, in_pack: set[bytes]) -> Problem:
    """``problem`` with the paths of this config it affects: the blob's own file, or those with
    a chunk in the pack."""
    try:
        named = bytes.fromhex(problem.name) if problem.kind == "damaged_blob" else None
    except ValueError:
        named = None
    blobs = [named] if named is not None else sorted(in_pack)
    paths = sorted({display(result._paths[b]) or "/" for b in blobs if b in result._paths})
    return replace(problem, paths=tuple(paths[:5])) if paths else problem


def _missing(pack: str) -> Problem:
    return Problem("missing_pack", pack, f"pack {pack[:16]}… is missing from storage")


def _compare(
    pack: str, entries: list[PackEntry], expected: dict[bytes, PackEntry]
) -> list[Problem]:
    """The blobs the index places in this pack that its own header does not hold there."""
    held = {e.id: e for e in entries}
    wrong = [
        bid
        for bid, want in expected.items()
        if (got := held.get(bid)) is None
        or (got.offset, got.length, got.type) != (want.offset, want.length, want.type)
    ]
    if not wrong:
        return []
    return [
        Problem(
            "damaged_pack",
            pack,
            f"pack {pack[:16]}…'s header does not hold {len(wrong)} blob(s) where the index says "
            f"(first: {wrong[0].hex()[:16]}…)",
        )
    ]
