"""``backapp catalog rebuild --from-bucket``: the backup history from the metadata objects beside
each backup, when no catalog copy is left.

What comes back, with the ids it had (object keys name them):

* **accounts**, by id and e-mail, *without a password* (the bucket never holds a password hash):
  each is locked until ``backapp user password --email …`` sets one. An account that exists
  already with the same id is kept as it is; one with the same e-mail and another id is a conflict
  (its backups are left out and listed);
* **agents**, by id, name and key digest: their API keys work again (the digest is an HMAC with
  the server secret, so only with the same ``BACKAPP_SECRET_KEY``);
* **configurations** as their newest metadata object describes them;
* **backups**: ``completed`` when their object (archive, or snapshot object) is still in the
  bucket with the recorded size, else ``expired``; snapshots with their pack bitmap, and each
  agent's repository with the packs those snapshots name (same sequence numbers) and the index
  objects in the bucket.

What cannot come back: sessions, alerts, Back Up Now requests, agent logs, leases, recovery-code
set-ups (the account's recovery key and the agents' wrapped keys; the organisation recovery key,
whose public key an administrator pastes again), backups that
never got a metadata object (the periodic round writes missing ones within minutes), and packs no
surviving snapshot names (they stay in the bucket, unused).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backend.accounts.tables import User
from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, BackupLog
from backend.repos.tables import RepoObject, Repository, Snapshot
from backend.services.catalog.metadata import METADATA_FORMAT, open_private
from backend.services.catalog.sealed import CatalogError
from backend.services.clock import utcnow
from backend.storage import ListedObject, ObjectStoreError, Storage

__all__ = ["RebuildReport", "rebuild_from_bucket"]

log = logging.getLogger("backapp.catalog")

LOCKED_PASSWORD = "!locked: rebuilt from the bucket; set a password with backapp user password"


@dataclass
class RebuildReport:
    """What a rebuild recreated, and what it could not."""

    users: list[str] = field(default_factory=list)
    """E-mails of the accounts it created (locked until a password is set)."""
    agents: int = 0
    configs: int = 0
    backups: int = 0
    expired: int = 0
    """Backups whose object is gone from the bucket (recorded as ``expired``)."""
    snapshots: int = 0
    repositories: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "agents": self.agents,
            "configs": self.configs,
            "backups": self.backups,
            "expired": self.expired,
            "snapshots": self.snapshots,
            "repositories": self.repositories,
            "failed": [{"what": what, "reason": why} for what, why in self.failed],
        }

    def lines(self) -> list[str]:
        out = [
            f"rebuilt {self.backups} backup(s) ({self.snapshots} snapshot(s); {self.expired} "
            f"whose object is gone, recorded as expired) of {self.configs} configuration(s), "
            f"{self.agents} agent(s) and {self.repositories} snapshot repository(ies)"
        ]
        for email in self.users:
            out.append(
                f"account {email} recreated without a password: set one with "
                f"`backapp user password --email {email}`"
            )
        out.extend(f"not rebuilt: {what}: {why}" for what, why in self.failed)
        out.append(
            "not in the bucket, so not rebuilt: passwords, sessions, alerts, agent logs, "
            "Back Up Now requests and recovery-code set-ups (run `backapp-agent recovery init` "
            "again on a machine of the account)"
        )
        return out


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


async def _read_meta(
    storage: Storage, secret: bytes, keys: list[str], found: list[dict[str, Any]]
) -> None:
    for key in keys:
        try:
            data = json.loads(await storage.get_bytes(key))
        except (ValueError, ObjectStoreError) as exc:
            found.append({"error": (key, f"unreadable: {exc}")})
            continue
        if isinstance(data, dict) and data.get("format") == METADATA_FORMAT:
            # Another secret stops the rebuild here, before anything is written.
            found.append(open_private(data, secret))


async def _discover(
    storage: Storage, secret: bytes
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Every metadata object in the bucket (opened), and the objects directly under each config
    prefix (key → size), one level at a time so that no pack is ever listed here."""
    found: list[dict[str, Any]] = []
    objects: dict[str, dict[str, int]] = {}
    users = await storage.list_objects("users/", delimiter="/")
    for user in users.prefixes:
        owners = [f"{user}server/"]
        owners += (await storage.list_objects(f"{user}agents/", delimiter="/")).prefixes
        for owner in owners:
            if owner != f"{user}server/":  # an agent: its snapshots' metadata is in its repo
                snapshots = await storage.list_objects(f"{owner}repo/meta/")
                await _read_meta(storage, secret, [o.key for o in snapshots.objects], found)
            configs = await storage.list_objects(f"{owner}configs/", delimiter="/")
            for config in configs.prefixes:
                level = await storage.list_objects(config, delimiter="/")
                objects[config] = {o.key: o.size for o in level.objects}
                if f"{config}meta/" in level.prefixes:
                    archives = await storage.list_objects(f"{config}meta/")
                    await _read_meta(storage, secret, [o.key for o in archives.objects], found)
    return found, objects


async def _users(found: list[dict[str, Any]], report: RebuildReport) -> set[str]:
    """Create the accounts the metadata names; the ids usable as owners."""
    wanted: dict[str, dict[str, Any]] = {}
    for meta in found:
        wanted.setdefault(meta["user"]["id"], meta["user"])
    usable: set[str] = set()
    for user_id, user in sorted(wanted.items()):
        by_id = await User.select(User.id).where(User.id == uuid.UUID(user_id)).first()
        if by_id is not None:
            usable.add(user_id)
            continue
        email = (user.get("email") or f"{user_id}@rebuilt.invalid").lower()
        if await User.exists().where(User.email == email):
            report.failed.append(
                (
                    f"the backups of account {email}",
                    "an account with that e-mail exists with another id; remove it and rebuild "
                    "again",
                )
            )
            continue
        await User(
            id=uuid.UUID(user_id),
            email=email,
            password_hash=LOCKED_PASSWORD,
            is_admin=bool(user.get("isAdmin")),
            created_at=utcnow(),
        ).save()
        report.users.append(email)
        usable.add(user_id)
    return usable


def _newest_first(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(found, key=lambda m: m["backup"].get("completedAt") or "", reverse=True)


async def _agents(found: list[dict[str, Any]], report: RebuildReport) -> None:
    seen: set[str] = set()
    for meta in _newest_first(found):
        agent = meta.get("agent")
        if not agent or agent["id"] in seen:
            continue
        seen.add(agent["id"])
        if await Agent.exists().where(Agent.id == uuid.UUID(agent["id"])):
            continue
        now = utcnow()
        await Agent(
            id=uuid.UUID(agent["id"]),
            user=uuid.UUID(meta["user"]["id"]),
            name=agent["name"],
            api_key_digest=agent.get("keyDigest") or f"rebuilt-{uuid.uuid4().hex}",
            api_key_prefix=agent.get("keyPrefix") or "",
            active=bool(agent.get("active", True)),
            platform=agent.get("platform"),
            created_at=_when(agent.get("createdAt")) or now,
            updated_at=now,
        ).save()
        report.agents += 1


async def _configs(found: list[dict[str, Any]], report: RebuildReport) -> None:
    seen: set[str] = set()
    for meta in _newest_first(found):
        config = meta["config"]
        if not config.get("id") or config["id"] in seen or config.get("sources") is None:
            continue
        seen.add(config["id"])
        if await BackupConfig.exists().where(BackupConfig.id == uuid.UUID(config["id"])):
            continue
        agent = meta.get("agent")
        now = utcnow()
        await BackupConfig(
            id=uuid.UUID(config["id"]),
            user=uuid.UUID(meta["user"]["id"]),
            name=config["name"],
            execution_mode=config.get("executionMode") or ("agent" if agent else "server"),
            agent=uuid.UUID(agent["id"]) if agent else None,
            sources=config["sources"],
            excludes=config.get("excludes") or [],
            options=config.get("options") or {},
            created_at=now,
            updated_at=now,
        ).save()
        report.configs += 1


async def _repositories(
    storage: Storage, snapshots: list[dict[str, Any]], report: RebuildReport
) -> dict[str, tuple[uuid.UUID, set[str]]]:
    """One repository per prefix with snapshots: its rows for the packs they name (same
    numbers), its index and config objects; agent id → (repository id, stored snapshot names).
    A repository that a newer machine continues holds snapshots of both machines under the old
    one's prefix: it belongs to the machine of the snapshot with the most packs handed out (the
    newest owner), and keeps the old prefix."""
    out: dict[str, tuple[uuid.UUID, set[str]]] = {}
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    for meta in snapshots:
        by_prefix.setdefault(meta["snapshot"]["repository"].rstrip("/"), []).append(meta)
    for home, metas in by_prefix.items():
        prefix = home + "/"
        newest = max(metas, key=lambda m: int(m["snapshot"].get("packCount") or 0))
        agent_id = newest["agent"]["id"]
        home_agent = home.rsplit("/", 2)[-2]
        listed: dict[str, ListedObject] = {
            o.key[len(prefix) :]: o for o in (await storage.list_objects(prefix)).objects
        }
        existing = await Repository.select().where(Repository.agent == uuid.UUID(agent_id)).first()
        if existing is not None:
            if await Snapshot.exists().where(Snapshot.repository == existing["id"]):
                report.failed.append(
                    (f"the snapshots of agent {agent_id}", "its repository has snapshots already")
                )
                continue
            await Repository.delete().where(Repository.id == existing["id"])
        # name → (seq, size); a name met with two numbers keeps the newer (higher) one.
        named: dict[str, tuple[int, int]] = {}
        for meta in metas:
            for seq, name, size in meta["snapshot"].get("packMap") or []:
                if int(seq) >= named.get(str(name), (-1, 0))[0]:
                    named[str(name)] = (int(seq), int(size))
        packs = {seq: (name, size) for name, (seq, size) in named.items()}
        counts = [int(m["snapshot"].get("packCount") or 0) for m in metas]
        count = max([*counts, max(packs) + 1 if packs else 0])
        repo_id = uuid.uuid4()
        now = utcnow()
        await Repository(
            id=repo_id,
            user=uuid.UUID(metas[0]["user"]["id"]),
            agent=uuid.UUID(agent_id),
            created_at=now,
            initialized="config" in listed,
            pack_count=count,
            prefix_agent=uuid.UUID(home_agent) if home_agent != agent_id else None,
        ).save()
        # (kind, name, size, sha256, seq, still in the bucket)
        specs: list[tuple[str, str, int, str, int | None, bool]] = [
            ("data", name, size, name, seq, f"data/{name[:2]}/{name}" in listed)
            for seq, (name, size) in sorted(packs.items())
        ]
        stored_snapshots: set[str] = set()
        for rel, obj in listed.items():
            kind, _, name = rel.partition("/")
            if rel == "config":
                info = await storage.head(obj.key)
                specs.append(
                    ("config", "config", obj.size, (info and info.sha256) or "", None, True)
                )
            elif kind == "index" and name:
                specs.append(("index", name, obj.size, name, None, True))
            elif kind == "snapshots" and name:
                info = await storage.head(obj.key)
                specs.append(("snapshot", name, obj.size, (info and info.sha256) or "", None, True))
                stored_snapshots.add(name)
        rows = [
            RepoObject(
                id=uuid.uuid4(),
                repository=repo_id,
                kind=kind,
                name=name,
                seq=seq,
                size=size,
                sha256=sha256,
                state="stored" if there else "deleted",
                created_at=now,
                stored_at=now if there else None,
                deleted_at=None if there else now,
            )
            for kind, name, size, sha256, seq, there in specs
        ]
        for start in range(0, len(rows), 500):
            await RepoObject.insert(*rows[start : start + 500])
        report.repositories += 1
        for meta in metas:
            out[meta["agent"]["id"]] = (repo_id, stored_snapshots)
    return out


async def _backups(
    storage: Storage,
    found: list[dict[str, Any]],
    objects: dict[str, dict[str, int]],
    report: RebuildReport,
) -> None:
    snapshots = [m for m in found if m["backup"]["type"] == "incremental" and m.get("snapshot")]
    repos = await _repositories(storage, snapshots, report)
    now = utcnow()
    for meta in found:
        backup = meta["backup"]
        if await BackupLog.exists().where(BackupLog.id == uuid.UUID(backup["id"])):
            continue
        snapshot = meta.get("snapshot") if backup["type"] == "incremental" else None
        if snapshot is not None:
            agent_id = meta["agent"]["id"]
            if agent_id not in repos:
                continue  # reported by _repositories
            there = backup["id"] in repos[agent_id][1]
        else:
            folder = backup["key"].rpartition("/")[0] + "/"
            there = objects.get(folder, {}).get(backup["key"]) == backup["size"]
        config = meta["config"]
        config_id = uuid.UUID(config["id"]) if config.get("id") else None
        if config_id is not None and not await BackupConfig.exists().where(
            BackupConfig.id == config_id
        ):
            config_id = None
        await BackupLog(
            id=uuid.UUID(backup["id"]),
            user=uuid.UUID(meta["user"]["id"]),
            config=config_id,
            agent=uuid.UUID(meta["agent"]["id"]) if meta.get("agent") else None,
            config_name=config["name"],
            status="completed" if there else "expired",
            s3_path=backup["key"],
            filename=backup["filename"],
            size=backup.get("size"),
            sha256=backup.get("sha256"),
            files_processed=backup.get("filesProcessed"),
            bytes_transferred=backup.get("bytesTransferred"),
            duration_ms=backup.get("durationMs"),
            errors=[],
            started_at=_when(backup.get("startedAt")) or now,
            completed_at=_when(backup.get("completedAt")),
            trigger=backup.get("trigger") or "manual",
            backup_type=backup["type"],
            new_bytes=backup.get("newBytes"),
            deleted_at=None if there else now,
            catalog_at=now if there else None,
        ).save()
        report.backups += 1
        report.expired += 0 if there else 1
        if snapshot is not None:
            await Snapshot(
                id=uuid.uuid4(),
                backup=uuid.UUID(backup["id"]),
                repository=repos[meta["agent"]["id"]][0],
                packs=base64.b64decode(snapshot.get("packs") or ""),
                pack_total=int(snapshot.get("packTotal") or 0),
                index_names=list(snapshot.get("indexes") or []),
                parent=snapshot.get("parent"),
                new_bytes=int(backup.get("newBytes") or 0),
                created_at=_when(backup.get("completedAt")) or now,
            ).save()
            report.snapshots += 1


async def rebuild_from_bucket(
    storage: Storage, secret: bytes, *, force: bool = False
) -> RebuildReport:
    """Recreate accounts, agents, configurations and the backup history from the metadata
    objects in the bucket (see the module docstring for what comes back and what cannot)."""
    if not force and await BackupLog.exists():
        raise CatalogError(
            "the database has backups already; rebuild is for an empty database (restore a "
            "catalog copy instead, or add --force to add what the bucket has and the database "
            "lacks)"
        )
    report = RebuildReport()
    found, objects = await _discover(storage, secret)
    for item in [m for m in found if "error" in m]:
        report.failed.append(item["error"])
    found = [m for m in found if "error" not in m]
    usable = await _users(found, report)
    found = [m for m in found if m["user"]["id"] in usable]
    await _agents(found, report)
    await _configs(found, report)
    await _backups(storage, found, objects, report)
    log.info("rebuilt %d backup(s) from the bucket", report.backups)
    return report
