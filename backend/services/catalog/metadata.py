"""The small metadata object beside each completed backup, from which ``backapp catalog rebuild
--from-bucket`` recreates the history when no catalog copy is left.

One JSON object per backup, in a ``meta/`` folder beside the backup's objects: an archive's at
``{its folder}/meta/{backup id}.json`` (``users/{user}/agents/{agent}/configs/{config}/meta/…``;
a file name never contains ``/``, so nothing else lies there), a snapshot's in its repository,
``users/{user}/agents/{agent}/repo/meta/{backup id}.json``. In the clear: the backup (file, key,
size, SHA-256, times, counts), its configuration's id and name, its owner's and agent's ids and
names, and for a snapshot the packs it needs (the committed bitmap, each pack's sequence number,
name and size) and its index objects. Sealed (``sealed``: AES-256-GCM under a key derived from the
server secret, bound to the backup id), what the bucket must not show: the owner's e-mail, the
configuration's sources, excludes and options, and the agent's key digest (an HMAC with the server
secret from which the key cannot be recovered, but which lets a rebuilt server accept it again).
Never a password hash.

Writing it is cheap (one small PUT) and never fails a backup: ``finish`` calls
:func:`write_quietly`, which logs a failure; ``catalog_at`` stays empty and the catalog round
(:func:`catch_up`) writes it later. The same round removes the metadata of backups that retention
expired.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from backend.accounts.tables import User
from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, BackupLog
from backend.repos.tables import RepoObject, Repository, Snapshot
from backend.services.catalog.sealed import open_small, seal_small
from backend.services.clock import iso, utcnow
from backend.services.keys import repo_prefix
from backend.storage import ObjectExists, Storage

__all__ = [
    "METADATA_FORMAT",
    "MetadataReport",
    "catch_up",
    "metadata_key",
    "open_private",
    "seal_private",
    "write_metadata",
    "write_quietly",
]

log = logging.getLogger("backapp.catalog")

METADATA_FORMAT = "backapp-backup-metadata"
WRITE_TIMEOUT = 15.0
"""Seconds a completion waits for its metadata at most; the catalog round writes it otherwise."""
BATCH = 200
"""Metadata objects one catalog round writes (or removes) at most; the next round goes on."""


def _json(value: Any) -> Any:
    """A JSON column's value (SQLite hands them back as text)."""
    return json.loads(value) if isinstance(value, str) else value


def metadata_key(row: dict[str, Any]) -> str | None:
    """Where the metadata of the backup ``row`` goes (None for a snapshot with no agent)."""
    if row.get("backup_type") != "incremental":
        prefix = str(row["s3_path"]).rpartition("/")[0]  # the archive's own folder
    elif row.get("agent") is not None:
        prefix = repo_prefix(user_id=row["user"], agent_id=row["agent"])
    else:
        return None
    return f"{prefix}/meta/{row['id']}.json"


_PRIVATE = (("user", "email"), ("config", "sources"), ("config", "excludes"), ("config", "options"))
_PRIVATE_AGENT = (("agent", "keyDigest"), ("agent", "keyPrefix"))


def seal_private(meta: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """``meta`` with its private fields moved into ``sealed`` (see the module docstring)."""
    private: dict[str, Any] = {}
    for part, name in _PRIVATE + (_PRIVATE_AGENT if meta.get("agent") else ()):
        private[f"{part}.{name}"] = meta[part].pop(name, None)
    text = json.dumps(private, sort_keys=True).encode()
    return {**meta, "sealed": seal_small(secret, text, meta["backup"]["id"])}


def open_private(meta: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """``meta`` with its sealed fields back in place (:class:`CatalogError` with another
    secret)."""
    private = json.loads(open_small(secret, meta.get("sealed") or "", meta["backup"]["id"]))
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in meta.items() if k != "sealed"}
    for dotted, value in private.items():
        part, name = dotted.split(".", 1)
        if isinstance(out.get(part), dict):
            out[part][name] = value
    return out


def _pack_seqs(packs: bytes) -> list[int]:
    bits = zlib.decompress(packs) if packs else b""
    return [
        (i << 3) | b for i, byte in enumerate(bits) if byte for b in range(8) if byte & (1 << b)
    ]


async def _snapshot_part(row: dict[str, Any]) -> dict[str, Any] | None:
    snap = await Snapshot.select().where(Snapshot.backup == row["id"]).first()
    if snap is None:
        return None
    seqs = _pack_seqs(bytes(snap["packs"] or b""))
    packs: list[list[Any]] = []
    for start in range(0, len(seqs), 500):
        rows = await RepoObject.select(RepoObject.seq, RepoObject.name, RepoObject.size).where(
            (RepoObject.repository == snap["repository"])
            & (RepoObject.kind == "data")
            & RepoObject.seq.is_in(seqs[start : start + 500])
        )
        packs.extend([int(r["seq"]), r["name"], int(r["size"])] for r in rows)
    packs.sort()
    repo = (
        await Repository.select(Repository.pack_count, Repository.agent, Repository.prefix_agent)
        .where(Repository.id == snap["repository"])
        .first()
    )
    # Where the objects are: the old machine's prefix when a newer one continues the repository.
    home = (repo["prefix_agent"] or repo["agent"]) if repo else row["agent"]
    return {
        "repository": repo_prefix(user_id=row["user"], agent_id=home),
        "packs": base64.b64encode(bytes(snap["packs"] or b"")).decode("ascii"),
        "packTotal": int(snap["pack_total"]),
        # Pack numbers handed out so far: a rebuilt repository numbers new packs after them.
        "packCount": max(int(repo["pack_count"]) if repo else 0, packs[-1][0] + 1 if packs else 0),
        "packMap": packs,
        "indexes": list(_json(snap["index_names"]) or []),
        "parent": snap["parent"],
    }


async def build_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """The metadata object of the completed backup ``row`` (a ``BackupLog`` row)."""
    config = (
        await BackupConfig.select().where(BackupConfig.id == row["config"]).first()
        if row.get("config") is not None
        else None
    )
    user = (
        await User.select(User.id, User.email, User.is_admin).where(User.id == row["user"]).first()
    )
    agent = (
        await Agent.select(
            Agent.id,
            Agent.name,
            Agent.platform,
            Agent.api_key_digest,
            Agent.api_key_prefix,
            Agent.active,
            Agent.created_at,
        )
        .where(Agent.id == row["agent"])
        .first()
        if row.get("agent") is not None
        else None
    )
    snapshot = await _snapshot_part(row) if row.get("backup_type") == "incremental" else None
    return {
        "format": METADATA_FORMAT,
        "version": 1,
        "written": iso(utcnow()),
        "backup": {
            "id": str(row["id"]),
            "type": row.get("backup_type") or "full",
            "status": "completed",
            "filename": row["filename"],
            "key": row["s3_path"],
            "size": row["size"],
            "sha256": row["sha256"],
            "newBytes": row.get("new_bytes"),
            "filesProcessed": row["files_processed"],
            "bytesTransferred": row["bytes_transferred"],
            "durationMs": row["duration_ms"],
            "startedAt": iso(row["started_at"]),
            "completedAt": iso(row["completed_at"]),
            "trigger": row["trigger"],
            "errors": len(_json(row["errors"]) or []),
        },
        "config": {
            "id": str(row["config"]) if row.get("config") is not None else None,
            "name": config["name"] if config else row["config_name"],
            "executionMode": config["execution_mode"] if config else None,
            "sources": _json(config["sources"]) if config else None,
            "excludes": _json(config["excludes"]) if config else None,
            "options": _json(config["options"]) if config else None,
        },
        "user": {
            "id": str(row["user"]),
            "email": user["email"] if user else None,
            "isAdmin": bool(user["is_admin"]) if user else False,
        },
        # The key's digest (an HMAC with the server secret; useless without the key itself) lets
        # a rebuilt server accept the agent's key again.
        "agent": (
            {
                "id": str(agent["id"]),
                "name": agent["name"],
                "platform": agent["platform"],
                "keyDigest": agent["api_key_digest"],
                "keyPrefix": agent["api_key_prefix"],
                "active": bool(agent["active"]),
                "createdAt": iso(agent["created_at"]),
            }
            if agent
            else None
        ),
        "snapshot": snapshot,
    }


async def write_metadata(storage: Storage, secret: bytes, backup_id: uuid.UUID | str) -> str | None:
    """Write the metadata of a completed backup and mark it written; its key (None when the
    backup is not completed or has no place for one)."""
    row = await BackupLog.select().where(BackupLog.id == backup_id).first()
    if row is None or row["status"] != "completed":
        return None
    key = metadata_key(row)
    if key is not None:
        meta = seal_private(await build_metadata(row), secret)
        body = json.dumps(meta, indent=1, sort_keys=True).encode()
        try:
            await storage.put_bytes(key, body)
        except ObjectExists:
            # Written before: by a round that died before marking it (the same facts), or
            # before a compaction changed the snapshot's packs (stale): write it again.
            await storage.delete(key)
            await storage.put_bytes(key, body)
    await BackupLog.update({BackupLog.catalog_at: utcnow()}).where(BackupLog.id == backup_id)
    return key


async def write_quietly(storage: Storage, secret: bytes, backup_id: uuid.UUID | str) -> None:
    """:func:`write_metadata`, never raising: a backup that completed stays completed; the next
    catalog round writes what failed here."""
    try:
        await asyncio.wait_for(write_metadata(storage, secret, backup_id), WRITE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - logged; retried by the catalog round
        log.warning(
            "could not write the metadata of backup %s (the catalog round retries): %s",
            backup_id,
            exc,
        )


@dataclass
class MetadataReport:
    """One catalog round's metadata work."""

    written: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


async def catch_up(storage: Storage, secret: bytes) -> MetadataReport:
    """Write the metadata that completions could not (at most :data:`BATCH`), and remove that
    of backups retention expired (their objects are gone)."""
    report = MetadataReport()
    missing = (
        await BackupLog.select(BackupLog.id)
        .where((BackupLog.status == "completed") & BackupLog.catalog_at.is_null())
        .limit(BATCH)
    )
    for r in missing:
        try:
            if await write_metadata(storage, secret, r["id"]) is not None:
                report.written += 1
        except Exception as exc:  # noqa: BLE001 - reported; the next round retries
            report.failed.append((f"metadata of backup {r['id']}", str(exc)))
    stale = (
        await BackupLog.select()
        .where((BackupLog.status == "expired") & BackupLog.catalog_at.is_not_null())
        .limit(BATCH)
    )
    for row in stale:
        key = metadata_key(row)
        try:
            if key is not None:
                await storage.delete(key)
            await BackupLog.update({BackupLog.catalog_at: None}).where(BackupLog.id == row["id"])
            report.removed += 1
        except Exception as exc:  # noqa: BLE001 - reported; the next round retries
            report.failed.append((f"metadata of expired backup {row['id']}", str(exc)))
    return report
