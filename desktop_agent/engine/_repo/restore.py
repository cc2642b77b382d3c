"""Restoring from a snapshot: walk its trees, pick the wanted paths, download only the packs (or
the parts of packs) that hold their chunks, in parallel, check every chunk's id after decryption,
and write the files.

Files are written to a temporary name beside their final place and moved there once every chunk
is in and checked; a file that cannot be completed (a pack is missing or damaged) is reported
with the pack's name and left out, and everything else is restored. A file that already exists:
when it holds exactly the snapshot's content it is left alone (so a second run finishes an
interrupted restore without writing again); when it differs, the restored copy is written beside
it as ``name (restored YYYY-MM-DD HH-MM-SS).ext`` unless ``overwrite`` is set.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .._cancel import CancelToken
from .._errors import AgentError
from .._restore.extraction import beside as _beside
from ..repo_protocol import ReadSlot
from .cache import BlobLocation
from .chunker import Chunker
from .errors import CorruptObject, MissingObject, RepositoryError
from .format import PACK_SIZE, Node
from .pack import open_entry
from .repository import Repository
from .restore_files import META_BY_FD, FileJob, apply_meta, apply_meta_fd, open_temp, read_umask

log = logging.getLogger("desktop_agent.engine.repo")

# Ranges closer than this are fetched in one request (reading a little unneeded data is cheaper
# than another round trip); no request is larger than _MAX_RANGE unless one blob is. A whole pack
# fits in one request: stores pay per request (and some read the whole object for any range), so a
# pack that is mostly needed is read once. Memory: a range is streamed (``Repository.read_spans``),
# so each of the ``workers`` holds about one blob of it at a time, whatever the range's size.
_MERGE_GAP = 256 * 1024
_MAX_RANGE = PACK_SIZE + 1024 * 1024
# Files are planned and written in batches, so that memory stays flat on a huge snapshot.
_BATCH_FILES = 20_000
_BATCH_BYTES = 2 * 1024 * 1024 * 1024
# Files kept open between two of their chunks: opening a file again by its name cost as much as
# writing a chunk on a loaded disk. Bounded, as a restore may have started many files at once.
_OPEN_FILES = 64


def _valid_name(name: bytes) -> bool:
    return (
        bool(name)
        and name not in (b".", b"..")
        and b"/" not in name
        and b"\0" not in name
        and (os.sep == "/" or b"\\" not in name)
    )


@dataclass(slots=True)
class SnapshotEntry:
    """One path of a snapshot, as ``ls`` shows it."""

    path: str
    node: Node


@dataclass(slots=True)
class RestoreReport:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    unchanged: int = 0
    """Files already present with the snapshot's content (left as they were)."""
    renamed: list[tuple[str, str]] = field(default_factory=list)
    """(path, the name the restored copy got) for files kept beside a different existing file."""
    replaced: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) for what could not be restored."""
    downloaded: int = 0
    """Bytes downloaded from storage."""
    packs: int = 0


Progress = Callable[[RestoreReport, int, int], None]
"""Called with the report so far, total files and total bytes to restore."""


def walk(
    repo: Repository,
    tree_id: bytes,
    *,
    prefix: tuple[bytes, ...] = (),
    descend: Callable[[tuple[bytes, ...]], bool] | None = None,
) -> Iterator[tuple[tuple[bytes, ...], Node]]:
    """Every node below a tree, folders before their contents, depth first; a folder for which
    ``descend(path)`` is false is yielded but not entered."""
    for node in repo.tree(tree_id).nodes:
        if not _valid_name(node.name):
            raise CorruptObject(f"a folder of the snapshot holds an invalid name {node.name!r}")
        parts = (*prefix, node.name)
        yield parts, node
        if node.type == "dir" and node.subtree is not None and (descend is None or descend(parts)):
            yield from walk(repo, node.subtree, prefix=parts, descend=descend)


def display(parts: tuple[bytes, ...]) -> str:
    return "/".join(os.fsdecode(p) for p in parts)


def lookup(repo: Repository, root: bytes, path: str) -> Node | None:
    """The node at ``path`` (``home/me/a.txt``; a leading ``/`` is ignored), or None; the root
    folder for an empty path."""
    parts = [os.fsencode(p) for p in path.split("/") if p not in ("", ".")]
    node = Node(name=b"", type="dir", subtree=root)
    for part in parts:
        if node.type != "dir" or node.subtree is None:
            return None
        found = next((n for n in repo.tree(node.subtree).nodes if n.name == part), None)
        if found is None:
            return None
        node = found
    return node


class SnapshotRestorer:
    """Restores paths of one snapshot into a folder."""

    def __init__(
        self,
        repo: Repository,
        *,
        workers: int = 4,
        cancel: CancelToken | None = None,
        progress: Progress | None = None,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.repo = repo
        self.workers = workers
        self.cancel = cancel
        self.progress = progress
        self._now = now
        self.report = RestoreReport()
        self._lock = threading.Lock()
        self._total_files = 0
        self._total_bytes = 0
        self._last = 0.0
        self._checked: dict[str, bool] = {}
        self._made: set[str] = set()
        self._fresh: set[str] = set()
        """Folders this restore created: nothing was in them, so their files need no look first."""
        # Read per restore (a process may change it); only used to skip an unneeded ``fchmod``.
        self._umask = read_umask() if META_BY_FD else None
        self._open = 0

    def _tick(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last >= 0.25:
            self._last = now
            self.progress(self.report, self._total_files, self._total_bytes)

    def restore(
        self,
        root: bytes,
        target: Path,
        *,
        select: Callable[[str, bool], bool] | None = None,
        descend: Callable[[str], bool] | None = None,
        overwrite: bool = False,
    ) -> RestoreReport:
        """Restore every node ``select(path, is_dir)`` accepts (all when ``None``; a selected
        folder brings everything below it) into ``target``. ``descend(folder)`` false skips a
        folder's contents unread (nothing below it can be selected)."""
        target.mkdir(parents=True, exist_ok=True)
        base = Path(os.path.realpath(target))
        stamp = self._now().strftime("%Y-%m-%d %H-%M-%S")
        dirs: list[tuple[Path, Node]] = []
        links: list[tuple[Path, Node, str]] = []
        batch: list[FileJob] = []
        batch_bytes = 0

        def chosen_nodes() -> Iterator[tuple[tuple[bytes, ...], Node]]:
            picked: set[tuple[bytes, ...]] = set()
            into = (
                None
                if descend is None
                else (lambda parts: parts in picked or descend(display(parts)))
            )
            for parts, node in walk(self.repo, root, descend=into):
                if (
                    select is None
                    or parts[:-1] in picked
                    or select(display(parts), node.type == "dir")
                ):
                    if node.type == "dir":
                        picked.add(parts)
                    yield parts, node

        # Totals first, so that progress can show an ETA (the folder listings are small and
        # cached: reading them twice costs less than keeping a huge snapshot's in memory).
        for _, node in chosen_nodes():
            if node.type == "file":
                self._total_files += 1
                self._total_bytes += node.size
        # Paths as strings: pathlib's objects cost more than the system calls made with them,
        # once per file of the snapshot.
        root_text = str(base)
        for parts, node in chosen_nodes():
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            shown = display(parts)
            text = os.path.join(root_text, *(os.fsdecode(p) for p in parts))
            folder = os.path.dirname(text)
            if not self._inside(base, folder):
                self.report.errors.append((shown, "refused: the folder leads outside the target"))
                continue
            if node.type == "dir":
                self._make_dir(text, shown)
                dirs.append((Path(text), node))
            elif node.type == "symlink":
                links.append((Path(text), node, shown))
            elif node.type == "file":
                self._ensure_parent(folder)
                job = self._prepare(text, node, shown, stamp, overwrite, folder in self._fresh)
                if job is None:
                    continue
                batch.append(job)
                batch_bytes += node.size
                if len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
                    self._fill(batch)
                    batch, batch_bytes = [], 0
        if batch:
            self._fill(batch)
        for path, node, shown in links:
            self._make_link(base, path, node, shown, overwrite)
        for path, node in reversed(dirs):  # deepest first: writing inside changes a folder's mtime
            apply_meta(path, node, follow=True)
        self._tick(force=True)
        return self.report

    # --- planning ------------------------------------------------------------------------------

    def _inside(self, base: Path, folder: str) -> bool:
        """Whether ``folder`` really is inside the target (no link on the way leads out); asked
        once per folder. A folder this restore created is (its parent was asked before)."""
        if folder in self._fresh:
            return True
        known = self._checked.get(folder)
        if known is None:
            real = os.path.realpath(folder)
            known = real == str(base) or real.startswith(str(base).rstrip(os.sep) + os.sep)
            self._checked[folder] = known
        return known

    def _ensure_parent(self, folder: str) -> None:
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)

    def _make_dir(self, text: str, shown: str) -> None:
        try:
            os.mkdir(text)
        except FileExistsError:
            pass  # a folder, or something in its way: looked at below
        except OSError:
            pass  # e.g. a parent is missing: made below, with the error named if it fails
        else:
            self._fresh.add(text)
            self._made.add(text)
            self.report.dirs += 1
            return
        path = Path(text)
        try:
            if path.is_symlink():
                self.report.errors.append((shown, "refused: a link is in the way of this folder"))
                return
            path.mkdir(parents=True, exist_ok=True)
            self.report.dirs += 1
        except OSError as exc:
            self.report.errors.append((shown, f"cannot create the folder: {exc.strerror or exc}"))

    def _same_content(self, path: Path, node: Node) -> bool:
        """Whether the existing file holds exactly the snapshot's content (same chunk ids)."""
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or st.st_size != node.size:
                return False
            if node.size == 0:
                return True
            return _chunk_ids(self.repo, path, node.size) == node.content
        except OSError:
            return False

    def _prepare(
        self, text: str, node: Node, shown: str, stamp: str, overwrite: bool, fresh: bool
    ) -> FileJob | None:
        final = text
        if not fresh and os.path.lexists(text):
            path = Path(text)
            if self._same_content(path, node):
                self.report.unchanged += 1
                self.report.files += 1
                self.report.bytes += node.size
                apply_meta(path, node, follow=False)
                return None
            if overwrite:
                self.report.replaced.append(shown)
            else:
                final = str(_beside(path, stamp))
                self.report.renamed.append((shown, os.path.basename(final)))
        job = FileJob(final, node, shown)
        if job.remaining == 0:  # an empty file: nothing to download
            try:
                os.close(open_temp(job))
            except OSError as exc:
                self.report.errors.append((shown, f"cannot write: {exc.strerror or exc}"))
                return None
            self._finish(job)
            return None
        return job

    # --- downloading ---------------------------------------------------------------------------

    def _fill(self, jobs: list[FileJob]) -> None:
        where = self._locate(list({bid for job in jobs for bid in job.node.content}))
        # Each chunk's offset in its file, from the plaintext lengths the index records.
        targets: dict[bytes, list[tuple[FileJob, int]]] = defaultdict(list)
        for job in jobs:
            offset = 0
            for blob_id in job.node.content:
                loc = where.get(blob_id)
                if loc is None:
                    job.failed = f"chunk {blob_id.hex()[:16]} is in no pack of the repository"
                    break
                targets[blob_id].append((job, offset))
                offset += loc.entry.raw_length
        for job in jobs:
            if job.failed:
                self._give_up(job)
        by_pack: dict[str, list[BlobLocation]] = defaultdict(list)
        for blob_id in targets:
            loc = where[blob_id]
            by_pack[loc.pack].append(loc)
        ranges: list[tuple[str, list[BlobLocation]]] = []
        for pack, locs in by_pack.items():
            locs.sort(key=lambda loc: loc.entry.offset)
            ranges.extend((pack, group) for group in _ranges(locs))
        ranges.sort(key=_cost, reverse=True)
        slots = self.repo.read_slots([("data", p) for p in by_pack]) if by_pack else {}
        self.report.packs += len(by_pack)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="snap-restore") as pool:
            futures = [
                pool.submit(self._fetch, pack, group, slots.get(("data", pack)), targets)
                for pack, group in ranges
            ]
            for f in as_completed(futures):
                f.result()
        for job in jobs:
            if job.remaining > 0 and not job.failed:
                job.failed = "not all of its chunks could be read"
                self._give_up(job)

    def _locate(self, blob_ids: list[bytes]) -> dict[bytes, BlobLocation]:
        where = self.repo.cache.locate(blob_ids)
        if len(where) < len(set(blob_ids)):
            # This machine's cache does not know every blob (a new machine, or a lost cache):
            # read the repository's index objects once, and look again.
            self.repo.rebuild_cache()
            where = self.repo.cache.locate(blob_ids)
        return where

    def _fetch(
        self,
        pack: str,
        group: list[BlobLocation],
        slot: ReadSlot | None,
        targets: dict[bytes, list[tuple[FileJob, int]]],
    ) -> None:
        if self.cancel is not None and self.cancel.is_set():
            return
        # Each blob is opened and written as soon as its bytes are in: a worker holds about one
        # blob, not the whole range (which would also be joined into a second copy).
        done = 0
        read_to = group[0].entry.offset
        try:
            if slot is None:
                raise MissingObject(f"pack {pack[:16]}… is missing from storage")
            spans = [(loc.entry.offset, loc.entry.length) for loc in group]
            with closing(self.repo.read_spans(slot, spans)) as sealed_blobs:
                for sealed in sealed_blobs:
                    if self.cancel is not None and self.cancel.is_set():
                        return
                    e = group[done].entry
                    done += 1
                    with self._lock:
                        self.report.downloaded += e.offset + e.length - read_to
                    read_to = e.offset + e.length
                    try:
                        plain = open_entry(
                            self.repo.keys, e, sealed, what=f"a chunk in pack {pack[:16]}…"
                        )
                    except RepositoryError as exc:
                        self._fail_blobs([group[done - 1]], targets, str(exc))
                        continue
                    for job, offset in targets.get(e.id, ()):
                        self._write(job, offset, plain)
        except (AgentError, OSError) as exc:
            self._fail_blobs(group[done:], targets, _why(exc, pack))

    def _fail_blobs(
        self, group: list[BlobLocation], targets: dict[bytes, list[tuple[FileJob, int]]], why: str
    ) -> None:
        for loc in group:
            for job, _ in targets.get(loc.entry.id, ()):
                with job.lock:
                    if job.failed:
                        continue
                    job.failed = why
                self._give_up(job)

    def _write(self, job: FileJob, offset: int, plain: bytes) -> None:
        done = False
        with job.lock:
            if job.failed:
                return
            fd = job.fd
            try:
                if fd is None:
                    if job.created:
                        fd = os.open(job.temp, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
                    else:
                        fd = open_temp(job, self._umask)
                        job.created = True
                os.pwrite(fd, plain, offset)
                job.remaining -= 1
                done = job.remaining == 0
                if done and META_BY_FD:
                    apply_meta_fd(fd, job.node, chmod=not job.moded)
            except OSError as exc:
                job.failed = f"cannot write: {exc.strerror or exc}"
            if fd is not None and job.fd is None and not done and not job.failed:
                with self._lock:
                    if self._open < _OPEN_FILES:
                        self._open += 1
                        job.fd = fd
            if fd is not None and job.fd != fd:
                os.close(fd)  # not kept: closed after this chunk
            elif done or job.failed:
                self._close(job)
        if job.failed:
            self._give_up(job)
        elif done:
            self._finish(job, meta=not META_BY_FD)

    def _close(self, job: FileJob) -> None:
        """Close the file ``job`` kept open, if any (``job.lock`` held)."""
        if job.fd is not None:
            fd, job.fd = job.fd, None
            with self._lock:
                self._open -= 1
            try:
                os.close(fd)
            except OSError:
                pass

    def _finish(self, job: FileJob, *, meta: bool = True) -> None:
        try:
            if meta:
                apply_meta(job.temp, job.node, follow=False)
            os.replace(job.temp, job.final)
        except OSError as exc:
            job.failed = f"cannot write: {exc.strerror or exc}"
            self._give_up(job)
            return
        with self._lock:
            self.report.files += 1
            self.report.bytes += job.node.size
        self._tick()

    def _give_up(self, job: FileJob) -> None:
        with job.lock:
            self._close(job)
        if job.created or job.remaining == 0:
            try:
                os.unlink(job.temp)
            except OSError:
                pass
        with self._lock:
            if not any(p == job.display for p, _ in self.report.errors):
                self.report.errors.append((job.display, job.failed or "failed"))

    def _make_link(self, base: Path, path: Path, node: Node, shown: str, overwrite: bool) -> None:
        target = node.target or b""
        try:
            if path.is_symlink() and os.readlink(os.fsencode(path)) == target:
                self.report.links += 1
                return
            if path.exists() or path.is_symlink():
                if not overwrite or path.is_dir() and not path.is_symlink():
                    self.report.errors.append(
                        (shown, "kept the existing entry in the link's place")
                    )
                    return
                path.unlink()
            os.symlink(target, os.fsencode(path))
            apply_meta(path, node, follow=False)
            self.report.links += 1
        except OSError as exc:
            self.report.errors.append((shown, f"cannot create the link: {exc.strerror or exc}"))


def _why(exc: BaseException, pack: str) -> str:
    text = str(exc)
    if "404" in text or isinstance(exc, MissingObject):
        return f"pack {pack[:16]}… is missing from storage"
    return f"pack {pack[:16]}… could not be read: {text}"


def _ranges(locs: list[BlobLocation]) -> Iterator[list[BlobLocation]]:
    group: list[BlobLocation] = []
    for loc in locs:
        if group:
            first, last = group[0].entry, group[-1].entry
            gap = loc.entry.offset - (last.offset + last.length)
            span = loc.entry.offset + loc.entry.length - first.offset
            if gap > _MERGE_GAP or span > _MAX_RANGE:
                yield group
                group = []
        group.append(loc)
    if group:
        yield group


def _cost(item: tuple[str, list[BlobLocation]]) -> int:
    """About how long a range keeps its worker busy, to start the longest first: the workers
    then finish together instead of one of them working alone through the last pack of small
    files (each blob of those costs a file of its own: creating, writing, naming it). The weights
    are from a restore's profile: a blob costs about as much as 10 KB of a large file."""
    _, group = item
    return (
        len(group) * 10_000
        + group[-1].entry.offset
        + group[-1].entry.length
        - group[0].entry.offset
    )


def _chunk_ids(repo: Repository, path: Path, size: int) -> list[bytes]:
    """The chunk ids of a file on disk, cut as a backup would cut it."""
    with open(path, "rb", buffering=0) as fh:
        return [repo.keys.blob_id(c) for c in Chunker(repo.keys.chunker_seed).chunks(fh, size)]
