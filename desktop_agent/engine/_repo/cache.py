"""The agent's local cache of its repository: where each blob is, which packs exist, and the trees
and snapshots it has already decrypted.

One SQLite file per repository in the agent's cache folder. It is only a cache: everything in it
can be rebuilt from the repository (index objects, packs and trees), and ``Repository`` does so when
it is missing or belongs to another repository.

Several backups may run at once (different configs; threads of the daemon or the tray, or another
process such as ``backapp-agent run`` beside the daemon), and SQLite's WAL mode and short
``BEGIN IMMEDIATE`` transactions keep each statement consistent. What else holds them together:

- a blob may sit in several packs (two runs that met the same new chunk at the same time both
  packed it): the cache keeps every place, so forgetting one pack never loses a blob that
  another still holds;
- each pack records when it was added (``added``), so that a run's start-up sync forgets only
  packs the server's answer can speak for, never one a concurrent run uploaded meanwhile;
- adopting the repository (``adopt``) and resetting the cache is one compare-and-set.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import zstandard

from .pack import PackEntry

SCHEMA_VERSION = 2
_IN_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,          -- hex SHA-256, the object's name
    seq INTEGER NOT NULL,               -- the server's sequence number for the pack
    size INTEGER NOT NULL,
    indexed INTEGER NOT NULL DEFAULT 0, -- 1 once an index object in the repository lists it
    added REAL NOT NULL DEFAULT 0       -- when this machine learnt of it (Unix time)
);
CREATE INDEX IF NOT EXISTS packs_seq ON packs (seq);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB NOT NULL,
    type INTEGER NOT NULL,
    pack INTEGER NOT NULL REFERENCES packs (id) ON DELETE CASCADE,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    raw_length INTEGER NOT NULL,
    compressed INTEGER NOT NULL,
    PRIMARY KEY (id, pack)              -- one row per place: a blob may be in several packs
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_pack ON blobs (pack);
CREATE TABLE IF NOT EXISTS trees (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (backup_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS indexes (name TEXT PRIMARY KEY);
"""


def cache_path(cache_dir: Path, agent_id: str) -> Path:
    """The cache file of the repository of ``agent_id`` in the cache folder ``cache_dir``."""
    return cache_dir / "repositories" / f"{agent_id}.sqlite3"


def snapshot_name(backup_id: str) -> str:
    """How a snapshot is named where an archive shows its file name."""
    return f"snapshot {backup_id[:8]}"


class BlobLocation(NamedTuple):
    """A blob's place: the pack's name and sequence number and the blob's entry."""

    pack: str
    seq: int
    entry: PackEntry


class PackRecord(NamedTuple):
    name: str
    seq: int
    size: int


def _wal(db: sqlite3.Connection, tries: int = 100) -> None:
    """Switch a new connection to WAL mode. Two connections doing so at once on a new file (two
    runs that start together) may be told "database is locked" at once, without the busy timeout
    being waited for: try again for a few seconds."""
    for attempt in range(tries):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.05)


class Cache:
    """The cache file of one repository (``path``). Thread-safe: one connection under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One connection, used under one lock: closing a connection while another thread is inside
        # a statement on it is undefined behaviour in SQLite (it crashed the process), and the
        # cache's statements are short next to the hashing, sealing and uploading around them.
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._zc = threading.local()
        with self._use() as db:
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self._migrate()

    def _migrate(self) -> None:
        """Bring a version 1 cache (one place per blob, no ``added``) to this version, in one
        transaction (another process may be opening it too)."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or str(row[0]) != "1":
                return
            db.execute("ALTER TABLE packs ADD COLUMN added REAL NOT NULL DEFAULT 0")
            db.execute("ALTER TABLE blobs RENAME TO blobs_v1")
            db.execute("DROP INDEX IF EXISTS blobs_pack")
            for statement in _SCHEMA.split(";"):
                if "blobs" in statement and "CREATE" in statement:
                    db.execute(statement)
            db.execute("INSERT INTO blobs SELECT * FROM blobs_v1")
            db.execute("DROP TABLE blobs_v1")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    # --- the connection ------------------------------------------------------------------------

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """The connection (opened again after ``close``), held for the ``with`` block: read every
        row inside it."""
        with self._lock:
            if self._conn is None:
                db = sqlite3.connect(
                    self.path, timeout=60, isolation_level=None, check_same_thread=False
                )
                _wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                self._conn = db
            yield self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._use() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (the next use opens it again); waits for a statement another
        thread is running."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- meta ----------------------------------------------------------------------------------

    def meta(self, key: str) -> bytes | None:
        with self._use() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value = row[0]
        return value.encode() if isinstance(value, str) else bytes(value)

    def set_meta(self, key: str, value: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def reset(self) -> None:
        """Forget everything (the cache belonged to another repository)."""
        with self._tx() as db:
            self._clear(db)

    @staticmethod
    def _clear(db: sqlite3.Connection) -> None:
        for table in ("blobs", "packs", "trees", "snapshots", "indexes", "meta"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def adopt(self, repository_id: bytes) -> bool:
        """Make this the cache of repository ``repository_id``: if it names another one (or none),
        forget everything and name this one, in one transaction, so that a second process opening
        the same repository a moment later never wipes what the first has added since. Returns
        whether the cache was reset."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'repository-id'").fetchone()
            known = None if row is None else row[0]
            if isinstance(known, str):
                known = known.encode()
            if known is not None and bytes(known) == repository_id:
                return False
            self._clear(db)
            db.execute("INSERT INTO meta VALUES ('repository-id', ?)", (repository_id,))
            return True

    # --- blobs and packs -----------------------------------------------------------------------

    def add_pack(
        self, name: str, seq: int, size: int, entries: Sequence[PackEntry], *, indexed: bool = False
    ) -> None:
        """Record a pack that is in storage and the blobs it holds."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO packs (name, seq, size, indexed, added) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET indexed = max(indexed, excluded.indexed)",
                (name, seq, size, int(indexed), time.time()),
            )
            (pack_id,) = db.execute("SELECT id FROM packs WHERE name = ?", (name,)).fetchone()
            # The entries go in as they are (no tuple per blob made for the insert: on a pack of
            # 16,384 tiny blobs that was half the time); the pack's row id is an integer from
            # this database.
            db.executemany(
                "INSERT OR IGNORE INTO blobs (type, id, offset, length, raw_length, compressed, "
                f"pack) VALUES (?, ?, ?, ?, ?, ?, {int(pack_id)})",  # noqa: S608
                entries,
            )

    def has_blob(self, blob_id: bytes) -> int | None:
        """The sequence number of a pack holding the blob, or None."""
        with self._use() as db:
            row = db.execute(
                "SELECT p.seq FROM blobs b JOIN packs p ON p.id = b.pack WHERE b.id = ? LIMIT 1",
                (blob_id,),
            ).fetchone()
        return None if row is None else int(row[0])

    def pack_seqs(self, blob_ids: Iterable[bytes]) -> dict[bytes, int]:
        """Pack sequence numbers of the given blobs that the cache knows."""
        rows = self._blob_rows("b.id, p.seq", blob_ids)
        return {bytes(blob_id): int(seq) for blob_id, seq in rows}

    def locate(self, blob_ids: Iterable[bytes]) -> dict[bytes, BlobLocation]:
        found: dict[bytes, BlobLocation] = {}
        columns = "b.id, b.type, b.offset, b.length, b.raw_length, b.compressed, p.name, p.seq"
        for row in self._blob_rows(columns, blob_ids):
            bid = bytes(row[0])
            found[bid] = BlobLocation(
                row[6],
                int(row[7]),
                PackEntry(row[1], bid, row[2], row[3], row[4], bool(row[5])),
            )
        return found

    def _blob_rows(self, columns: str, blob_ids: Iterable[bytes]) -> Iterator[Any]:
        """``columns`` of the known blobs among ``blob_ids`` with their packs (``b``, ``p``),
        asked ``_IN_BATCH`` ids at a time (SQLite's limit on bound parameters)."""
        ids = list(blob_ids)
        for start in range(0, len(ids), _IN_BATCH):
            batch = ids[start : start + _IN_BATCH]
            marks = ",".join("?" * len(batch))
            with self._use() as db:
                rows = db.execute(
                    f"SELECT {columns} FROM blobs b JOIN packs p ON p.id = b.pack "  # noqa: S608
                    f"WHERE b.id IN ({marks})",
                    batch,
                ).fetchall()
            yield from rows

    def packs(self) -> list[PackRecord]:
        with self._use() as db:
            rows = db.execute("SELECT name, seq, size FROM packs ORDER BY seq").fetchall()
        return [PackRecord(n, s, z) for n, s, z in rows]

    def blob_bytes(self) -> dict[str, int]:
        """Each pack's bytes of blobs (what is not its headers), by pack name."""
        with self._use() as db:
            rows = db.execute(
                "SELECT p.name, SUM(b.length) FROM blobs b JOIN packs p ON p.id = b.pack "
                "GROUP BY p.name"
            ).fetchall()
        return {name: int(total or 0) for name, total in rows}

    def unindexed_packs(self, seqs: Iterable[int]) -> list[str]:
        wanted = set(seqs)
        with self._use() as db:
            rows = db.execute("SELECT name, seq FROM packs WHERE indexed = 0").fetchall()
        return [name for name, seq in rows if seq in wanted]

    def pack_entries(self, name: str) -> list[PackEntry]:
        with self._use() as db:
            rows = db.execute(
                "SELECT b.id, b.type, b.offset, b.length, b.raw_length, b.compressed FROM blobs b "
                "JOIN packs p ON p.id = b.pack WHERE p.name = ? ORDER BY b.offset",
                (name,),
            ).fetchall()
        return [PackEntry(t, bytes(i), o, n, r, bool(c)) for i, t, o, n, r, c in rows]

    def mark_indexed(self, names: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE packs SET indexed = 1 WHERE name = ?", [(n,) for n in names])

    def forget_packs_except(
        self, live: Iterable[int], *, seen_before: float | None = None, below: int | None = None
    ) -> int:
        """Drop the packs whose sequence number is not in ``live`` (the server deleted them), with
        their places of blobs. ``live`` may be an answer older than the cache: then only packs
        added before ``seen_before`` (Unix time) and numbered below ``below`` are judged by it;
        later ones are a concurrent run's uploads the answer could not list. Returns how many
        were dropped."""
        keep = set(live)
        with self._tx() as db:
            gone = [
                (pid,)
                for pid, seq, added in db.execute("SELECT id, seq, added FROM packs")
                if seq not in keep
                and (seen_before is None or added < seen_before)
                and (below is None or seq < below)
            ]
            db.executemany("DELETE FROM packs WHERE id = ?", gone)
        return len(gone)

    def forget_packs(self, names: Iterable[str]) -> int:
        """Drop these packs (storage lost them), with their places of blobs; the others stay,
        whoever added them meanwhile. Returns how many were dropped."""
        with self._tx() as db:
            cur = db.executemany("DELETE FROM packs WHERE name = ?", [(n,) for n in names])
            return max(0, cur.rowcount)

    def index_names(self) -> set[str]:
        with self._use() as db:
            return {n for (n,) in db.execute("SELECT name FROM indexes").fetchall()}

    def add_index_names(self, names: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO indexes VALUES (?)", [(n,) for n in names])

    # --- trees and snapshots (decrypted, compressed) -------------------------------------------

    def _compressor(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        pair = getattr(self._zc, "pair", None)
        if pair is None:
            pair = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
            self._zc.pair = pair
        return pair  # type: ignore[no-any-return]

    def tree(self, tree_id: bytes) -> bytes | None:
        with self._use() as db:
            row = db.execute("SELECT data FROM trees WHERE id = ?", (tree_id,)).fetchone()
        return None if row is None else self._compressor()[1].decompress(row[0])

    def put_tree(self, tree_id: bytes, plaintext: bytes) -> None:
        data = self._compressor()[0].compress(plaintext)
        with self._use() as db:
            db.execute("INSERT OR IGNORE INTO trees VALUES (?, ?)", (tree_id, data))

    def snapshot(self, backup_id: str) -> bytes | None:
        with self._use() as db:
            row = db.execute(
                "SELECT data FROM snapshots WHERE backup_id = ?", (backup_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def put_snapshot(self, backup_id: str, plaintext: bytes) -> None:
        with self._use() as db:
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (backup_id, plaintext))
