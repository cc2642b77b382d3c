"""Writing one snapshot: walk the sources, read only what changed since the parent snapshot, cut it
into chunks, deduplicate, compress, encrypt, pack, upload, and describe it all in trees.

The pipeline (every stage bounded, so memory stays flat on any tree):

    walker (this thread)  --changed files-->  readers (threads: read, chunk, hash)
                                                   |  new chunks
                                                   v
                                              sealers (threads: zstd, AES-GCM) --> packer
                                                                                     |  full packs
                                                                                     v
                                                                        uploaders (threads: PUT)

The walker keeps one frame per open directory; a finished directory becomes a tree blob once the
files in it are read. Unchanged files (same size, mtime, ctime and inode as in the parent
snapshot) are not opened: their chunk ids are taken from the parent's tree.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import closing

from .._errors import BackupCancelled, unreadable_text
from .chunker import Chunker
from .errors import RepositoryError
from .format import (
    BlobType,
    Node,
)
from .pipeline import BlobPipeline
from .walk import (
    Frame,
    Reused,
    StatLike,
    fs_path_of,
    node_from_stat,
    open_noatime,
    path_parts,
    read_whole,
    unchanged,
)

log = logging.getLogger("desktop_agent.engine.repo")

# Small files are handed to the readers in batches, to keep the per-task overhead low.
_BATCH_FILES = 64
_BATCH_BYTES = 4 * 1024 * 1024
# Files up to this size in a batch are read before any of their chunks is stored (at most
# _BATCH_FILES of them in memory at once per reader).
_READ_FIRST = 64 * 1024


def _take_stat(node: Node, st: os.stat_result) -> None:
    """Make ``node`` say what ``st`` says (a file that changed since the scan)."""
    fresh = node_from_stat(node.name, st, "file")
    node.mode, node.mtime, node.ctime = fresh.mode, fresh.mtime, fresh.ctime
    node.inode, node.uid, node.gid, node.size = fresh.inode, fresh.uid, fresh.gid, fresh.size


class SnapshotWriter(BlobPipeline):
    """Writes the blobs and trees of one snapshot into the repository; ``write`` returns the root
    tree's id. Call ``finish`` afterwards for the packs the snapshot uses."""

    def _setup(self) -> None:
        self._chunker = Chunker(self.keys.chunker_seed)
        self._pending: deque[Frame] = deque()
        self._batch: list[tuple[Node, str]] = []
        self._reading = 0
        self._batch_bytes = 0
        self._batch_frame: Frame | None = None

    # --- reading files -------------------------------------------------------------------------

    def _read_file(self, node: Node, fs_path: str) -> Node | None:
        """Chunk and store one file; ``None`` (and a per-file error) if it cannot be read."""
        content: list[bytes] = []
        read = 0
        try:
            fd = open_noatime(fs_path)
            with (
                os.fdopen(fd, "rb", buffering=0) as fh,
                closing(self._chunker.chunks(fh, node.size)) as chunks,
            ):
                for chunk in chunks:
                    self._check()
                    blob_id = self.keys.blob_id(chunk)
                    content.append(blob_id)
                    read += len(chunk)
                    self._store(BlobType.DATA, blob_id, chunk)
                after = os.fstat(fd)
        except (BackupCancelled, RepositoryError):
            raise
        except OSError as exc:
            self._file_error(fs_path, unreadable_text(exc))
            return None
        return self._read_as(node, fs_path, content, read, after)

    def _read_as(
        self, node: Node, fs_path: str, content: list[bytes], read: int, after: os.stat_result
    ) -> Node:
        if after.st_size != read or after.st_mtime_ns != node.mtime:
            self._file_error(
                fs_path, "changed while it was read; the backup holds the content as read"
            )
        node.size = read
        node.content = content
        with self._lock:
            self.stats.bytes_read += read
            self.stats.files_read += 1
        return node

    def _read_batch(self, batch: Sequence[tuple[Node, str]]) -> list[Node | None]:
        """Read a batch of files. The small ones are read first, their chunks looked up in the
        cache in one query and handed on in one job: on a tree of tiny files, the per-file
        queries, locks and jobs were a good part of the time.

        A node holds what the scan saw. A small file whose ``fstat`` after the read says it
        changed since is read once more on its own, with what that ``fstat`` said: whether it
        changed before the read (fine) or during it (a per-file error) is told by that read."""
        small: dict[int, tuple[list[bytes], os.stat_result] | None] = {}
        for i, (node, path) in enumerate(batch):
            if node.size <= _READ_FIRST:
                self._check()
                try:
                    small[i] = read_whole(self._chunker, path, node.size)
                except OSError as exc:
                    self._file_error(path, unreadable_text(exc))
                    small[i] = None
        blob_id = self.keys.blob_id
        ids: dict[int, list[bytes]] = {}
        for i, got in small.items():
            if got is None:
                continue
            chunks, after = got
            node = batch[i][0]
            if after.st_size != sum(map(len, chunks)) or after.st_mtime_ns != node.mtime:
                _take_stat(node, after)
                small[i] = None
                ids[i] = []  # read again below
                continue
            ids[i] = [blob_id(chunk) for chunk in chunks]
        known = self.cache.pack_seqs(blob_id for found in ids.values() for blob_id in found)
        self._store_many(
            BlobType.DATA,
            [
                pair
                for i, found in ids.items()
                if (got := small[i]) is not None
                for pair in zip(found, got[0], strict=True)
            ],
            known,
        )
        self._check()
        out: list[Node | None] = []
        files = read = 0
        for i, (node, path) in enumerate(batch):
            got = small.get(i)
            if got is None:
                out.append(self._read_file(node, path) if i in ids or i not in small else None)
                continue
            size = sum(map(len, got[0]))
            node.size = size
            node.content = ids[i]
            files += 1
            read += size
            out.append(node)
        with self._lock:
            self.stats.bytes_read += read
            self.stats.files_read += files
        return out

    # --- the walk ------------------------------------------------------------------------------

    def write(
        self,
        entries: Iterator[tuple[str, bytes, StatLike | None]],
        parent_root: bytes | None,
    ) -> bytes:
        """Back up the scanned ``entries`` (kind, absolute path as bytes, the scan's ``lstat`` of
        a regular file or ``None``: a scan's ``stat_entries()``, folders before their contents,
        roots in path order) and return the root tree's id. A file the scan stat'ed is not
        stat'ed again: on a tree of tiny files the second ``lstat`` was a tenth of the time."""
        root_nodes = self._tree_nodes(parent_root)
        stack = [Frame((), None, None, root_nodes)]
        # The folder of the last file and its frame: the next file in the same folder needs no
        # splitting of its path into parts and no walk of the stack.
        last_dir: bytes | None = None
        last_top: Frame | None = None
        posix = os.sep == "/"
        count = 0
        try:
            for kind, raw, scanned in entries:
                # Every so many entries, not each: the check of the oldest closed folder's reads
                # went through all its files' jobs, per file.
                count += 1
                if not count & 63:
                    self._check()
                    self._settle(block=False)
                    self._report()
                if posix and scanned is not None:
                    dir_raw, _, name = raw.rpartition(b"/")
                    if dir_raw == last_dir and stack[-1] is last_top and name:
                        self._add_file(stack[-1], name, os.fsdecode(raw), scanned)
                        continue
                parts = path_parts(raw)
                if not parts:
                    continue
                self._descend(stack, parts[:-1])
                top = stack[-1]
                name = parts[-1]
                fs_path = os.fsdecode(raw)
                if kind == "f" and scanned is not None:
                    if posix:
                        last_dir, last_top = raw.rpartition(b"/")[0], top
                    self._add_file(top, name, fs_path, scanned)
                    continue
                try:
                    st = os.lstat(fs_path)
                except OSError as exc:
                    self._file_error(fs_path, unreadable_text(exc, "vanished during the backup"))
                    continue
                if kind == "d" and stat.S_ISDIR(st.st_mode):
                    frame = self._open_frame(parts, fs_path, st, self._parent_node(top, name))
                    top.children.append(frame)
                    stack.append(frame)
                elif kind == "l" and stat.S_ISLNK(st.st_mode):
                    try:
                        target = os.readlink(os.fsencode(fs_path))
                    except OSError as exc:
                        self._file_error(fs_path, f"cannot read the link: {exc.strerror or exc}")
                        continue
                    node = node_from_stat(name, st, "symlink")
                    node.target = target
                    top.children.append(node)
                    self.stats.symlinks += 1
                elif kind == "f" and stat.S_ISREG(st.st_mode):
                    self._add_file(top, name, fs_path, st)
                else:
                    self._file_error(fs_path, "changed type during the backup")
            self._check()
            while len(stack) > 1:
                self._close(stack.pop())
            self._flush_batch()
            root = stack[0]
            self._pending.append(root)
            self._settle(block=True)
            assert root.node is not None and root.node.subtree is not None
            return root.node.subtree
        except BaseException:
            self._shutdown(wait=False)
            raise

    @staticmethod
    def _parent_node(top: Frame, name: bytes) -> Node | None:
        return top.parent_nodes.get(name) if top.parent_nodes else None

    def _tree_nodes(self, tree_id: bytes | None) -> dict[bytes, Node] | None:
        if tree_id is None:
            return None
        try:
            return {n.name: n for n in self.repo.tree(tree_id).nodes}
        except RepositoryError as exc:
            log.warning("cannot read the parent snapshot's folder (%s); reading it afresh", exc)
            return None

    def _open_frame(
        self, parts: tuple[bytes, ...], fs_path: str, st: os.stat_result, parent: Node | None
    ) -> Frame:
        parent_nodes = (
            self._tree_nodes(parent.subtree)
            if parent is not None and parent.type == "dir" and parent.subtree
            else None
        )
        return Frame(parts, fs_path, node_from_stat(parts[-1], st, "dir"), parent_nodes)

    def _descend(self, stack: list[Frame], dir_parts: tuple[bytes, ...]) -> None:
        """Close frames until the top one is ``dir_parts`` or an ancestor of it, then open the
        missing ancestors (folders above a source)."""
        while stack[-1].parts != dir_parts[: len(stack[-1].parts)]:
            self._close(stack.pop())
        while len(stack[-1].parts) < len(dir_parts):
            parts = dir_parts[: len(stack[-1].parts) + 1]
            fs_path = fs_path_of(parts)
            top = stack[-1]
            parent = top.parent_nodes.get(parts[-1]) if top.parent_nodes else None
            try:
                st = os.lstat(fs_path)
            except OSError as exc:
                raise RepositoryError(f"cannot read {fs_path}: {exc.strerror or exc}") from exc
            frame = self._open_frame(parts, fs_path, st, parent)
            top.children.append(frame)
            stack.append(frame)

    def _add_file(self, top: Frame, name: bytes, fs_path: str, st: StatLike) -> None:
        self.stats.files += 1
        self.stats.bytes += st.st_size
        node = node_from_stat(name, st, "file")
        parent = top.parent_nodes.get(name) if top.parent_nodes else None
        if unchanged(parent, st):
            assert parent is not None
            node.content = list(parent.content)
            top.children.append(Reused(node, fs_path))
            return
        if st.st_size > _BATCH_BYTES:
            top.children.append(self._submit([(node, fs_path)]))
            return
        if self._batch_frame is not top:
            self._flush_batch()
            self._batch_frame = top
        self._batch.append((node, fs_path))
        self._batch_bytes += st.st_size
        if len(self._batch) >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if not self._batch or self._batch_frame is None:
            return
        self._batch_frame.children.append(self._submit(self._batch))
        self._batch = []
        self._batch_bytes = 0
        self._batch_frame = None

    def _submit(self, batch: list[tuple[Node, str]]) -> Future[list[Node | None]]:
        # Keep the readers' queue short (the walker waits for the oldest folders instead), so
        # that memory does not grow with the tree.
        while len(self._pending) > 256 or self._reading > 4 * self.options.readers:
            self._check()
            if self._pending:
                self._settle(block=True, limit=1)
            else:
                time.sleep(0.002)
        with self._lock:
            self._reading += 1
        job = self._readers.submit(self._read_batch, batch)
        job.add_done_callback(self._read_done)
        return job

    def _read_done(self, job: Future[list[Node | None]]) -> None:
        with self._lock:
            self._reading -= 1
        if not job.cancelled() and job.exception() is not None:
            self._fail(job.exception())  # type: ignore[arg-type]

    def _close(self, frame: Frame) -> None:
        if self._batch_frame is frame:
            self._flush_batch()
        self._pending.append(frame)

    def _settle(self, *, block: bool, limit: int | None = None) -> None:
        """Turn closed directories into tree blobs, oldest first (children close before their
        parents), waiting for their files when ``block``."""
        done = 0
        while self._pending and (limit is None or done < limit):
            frame = self._pending[0]
            if not block and not all(c.done() for c in frame.children if isinstance(c, Future)):
                return
            self._finish_frame(frame)
            self._pending.popleft()
            done += 1

    def _finish_frame(self, frame: Frame) -> None:
        nodes: list[Node] = []
        reused: list[Reused] = []
        for child in frame.children:
            if isinstance(child, Node):
                nodes.append(child)
            elif isinstance(child, Frame):
                if child.node is not None:
                    nodes.append(child.node)
            elif isinstance(child, Reused):
                reused.append(child)
            else:
                nodes.extend(n for n in child.result() if n is not None)
        if reused:
            nodes.extend(self._check_reused(reused))
        frame.children = []
        nodes.sort(key=lambda n: n.name)
        tree_id = self._store_tree(nodes)
        meta = frame.meta if frame.meta is not None else Node(name=b"", type="dir")
        meta.subtree = tree_id
        frame.node = meta
        if frame.parts:
            self.stats.dirs += 1

    def _check_reused(self, reused: list[Reused]) -> list[Node]:
        """Files taken over from the parent snapshot, whose chunks must still be in a live pack;
        a file with a chunk the repository lost is read again."""
        wanted = {bid for r in reused for bid in r.node.content}
        seqs = self.cache.pack_seqs(wanted)
        with self._lock:
            self.referenced.update(seqs.values())
        out: list[Node] = []
        for r in reused:
            if all(bid in seqs for bid in r.node.content):
                out.append(r.node)
                continue
            log.info("re-reading %s: the repository no longer holds all of its chunks", r.fs_path)
            node = self._read_file(r.node, r.fs_path)
            if node is not None:
                out.append(node)
        return out

    def _store_tree(self, nodes: list[Node]) -> bytes:
        from .format import encode_tree

        plain = encode_tree(nodes)
        tree_id = self.keys.blob_id(plain)
        self.cache.put_tree(tree_id, plain)
        self._store(BlobType.TREE, tree_id, plain)
        return tree_id
