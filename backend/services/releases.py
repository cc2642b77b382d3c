"""Agent releases: the signed builds the server stores and offers to agents in their heartbeats,
and each owner's update policy for their fleet (docs/releases.md).

The server never signs anything. ``add`` checks the publisher's signature with the same function
the agent uses (:func:`desktop_agent.engine.releases.verify_release`) so that a build the agents
would refuse is refused at once, with the reason; the agent checks again after its download, so
a server or bucket that is taken over still cannot make an agent run a build of its own.

The heartbeat is the server's hottest path, so :meth:`ReleaseService.offer` keeps to at most one
small indexed read (the owner's policy), and none at all when the agent sent no usable version or
no build exists for its platform: the release list is cached per process
(``BACKAPP_RELEASE_CACHE_SECONDS``), dropped at once by ``add`` and ``remove`` in this process.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from packaging.version import InvalidVersion, Version

from backend.agents.tables import AgentRelease, AgentUpdatePolicy
from backend.errors import Conflict, InvalidInput, NotFound
from backend.services.clock import aware, iso, utcnow
from backend.settings import Settings
from backend.storage import Storage
from desktop_agent.engine.releases import (
    PLATFORMS,
    BadRelease,
    parse_public_key,
    release_public_key,
    verify_release,
)

__all__ = [
    "POLICIES",
    "URL_SECONDS",
    "Policy",
    "Release",
    "ReleaseService",
    "UpdateOffer",
    "parse_version",
    "release_key",
]

log = logging.getLogger("backapp.releases")

#: Lifetime of the download URL in a heartbeat's ``update``.
URL_SECONDS = 3600
POLICIES = ("latest", "pin", "hold")
PolicyName = Literal["latest", "pin", "hold"]
_CHUNK = 1 << 20


def parse_version(text: str | None) -> Version | None:
    """The PEP 440 version in ``text``; ``None`` when there is none or it does not parse."""
    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def release_key(platform: str, version: str) -> str:
    """Where a build lives in the bucket."""
    name = "backapp-agent.exe" if platform == "win32" else "backapp-agent"
    return f"releases/{platform}/{version}/{name}"


@dataclass(frozen=True)
class Release:
    platform: str
    version: str
    sha256: str
    size: int
    signature: str
    object_key: str | None
    """``None`` while its ``add`` is still storing the build (never offered then)."""
    created_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Release:
        return cls(
            platform=row["platform"],
            version=row["version"],
            sha256=row["sha256"],
            size=int(row["size"]),
            signature=row["signature"],
            object_key=row["object_key"],
            created_at=aware(row["created_at"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "signature": self.signature,
            "objectKey": self.object_key,
            "createdAt": iso(self.created_at),
        }


@dataclass(frozen=True)
class Policy:
    policy: PolicyName = "latest"
    version: str | None = None


@dataclass(frozen=True)
class UpdateOffer:
    """The heartbeat's ``update``: what the agent downloads and checks."""

    version: str
    url: str
    sha256: str
    size: int
    signature: str


def _digest(path: Path) -> tuple[str, int]:
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file", field="file")
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_platform(platform: str) -> None:
    if platform not in PLATFORMS:
        raise InvalidInput(
            f"unknown platform {platform!r} (one of: {', '.join(PLATFORMS)})", field="platform"
        )


def _check_version(version: str) -> Version:
    parsed = parse_version(version) if len(version) <= 64 else None
    if parsed is None or version != version.strip():
        raise InvalidInput(
            f"{version!r} is not a version (PEP 440, such as 1.2.3)", field="version"
        )
    return parsed


class ReleaseService:
    """Adds, lists and removes releases; keeps owners' policies; picks an agent's update."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self._clock = clock
        self._cache: dict[str, list[tuple[Version, Release]]] | None = None
        self._loaded_at = 0.0

    def public_key(self) -> Ed25519PublicKey:
        """The key builds must be signed with: the server's setting, else the built-in one."""
        if self.settings.release_public_key:
            return parse_public_key(self.settings.release_public_key)
        return release_public_key()

    # --- publishing ---------------------------------------------------------------------------

    async def add(self, path: Path, platform: str, version: str, signature: str) -> Release:
        """Check and store one build. Refuses (nothing stored) an unknown platform, a version that
        does not parse, an empty or missing file, a signature the release key did not make over
        these exact fields, and a (platform, version) that exists already."""
        _check_platform(platform)
        parsed = _check_version(version)
        sha256, size = await anyio.to_thread.run_sync(_digest, path)
        if size == 0:
            raise InvalidInput(f"{path} is empty", field="file")
        try:
            verify_release(self.public_key(), platform, version, sha256, size, signature.strip())
        except BadRelease as exc:
            raise InvalidInput(f"signature refused: {exc}", field="signature") from None
        for existing in await self.releases(platform=platform):
            if parse_version(existing.version) == parsed:
                raise Conflict(
                    f"{platform} {existing.version} exists already; remove it first to replace it"
                    + ("" if existing.object_key else " (an earlier add did not finish)"),
                    field="version",
                )
        # The row first, without its object: the unique (platform, version) index makes a second,
        # concurrent add fail here before it touches the bucket, and no agent is offered a build
        # whose object is not stored yet (``object_key`` is still null).
        row_id = uuid.uuid4()
        now = utcnow()
        try:
            await AgentRelease.insert(
                AgentRelease(
                    id=row_id,
                    platform=platform,
                    version=version,
                    sha256=sha256,
                    size=size,
                    signature=signature.strip(),
                    object_key=None,
                    created_at=now,
                )
            )
        except Exception as exc:  # the unique index: another add of the same pair won
            if await AgentRelease.exists().where(
                (AgentRelease.platform == platform) & (AgentRelease.version == version)
            ):
                raise Conflict(f"{platform} {version} exists already", field="version") from exc
            raise
        key = release_key(platform, version)
        try:
            # An object left at the key by an add that failed after its upload is not any row's.
            await self.storage.delete(key)
            stored = await self.storage.put_file(key, path)
            if stored.size != size or stored.sha256 not in (None, sha256):
                # The signature covers what was read first: agents would refuse these bytes.
                raise InvalidInput(f"{path} changed while it was stored", field="file")
            await AgentRelease.update({AgentRelease.object_key: key}).where(
                AgentRelease.id == row_id
            )
        except BaseException:
            await AgentRelease.delete().where(AgentRelease.id == row_id)
            await self.storage.delete(key)
            raise
        finally:
            self.forget()
        log.info("agent release %s %s added (%d bytes)", platform, version, size)
        return Release(platform, version, sha256, size, signature.strip(), key, now)

    async def releases(self, *, platform: str | None = None) -> list[Release]:
        """Every release (of ``platform``), by platform, then newest version first."""
        query = AgentRelease.select()
        if platform is not None:
            query = query.where(AgentRelease.platform == platform)
        releases = [Release.from_row(row) for row in await query]
        releases.sort(key=lambda r: parse_version(r.version) or Version("0"), reverse=True)
        releases.sort(key=lambda r: r.platform)
        return releases

    async def remove(self, platform: str, version: str) -> Release:
        """Delete a release and its build; agents are no longer offered it."""
        _check_platform(platform)
        parsed = _check_version(version)
        found = [
            r for r in await self.releases(platform=platform) if parse_version(r.version) == parsed
        ]
        if not found:
            raise NotFound(f"there is no release {platform} {version}", field="version")
        release = found[0]
        await AgentRelease.delete().where(
            (AgentRelease.platform == platform) & (AgentRelease.version == release.version)
        )
        self.forget()
        await self.storage.delete(release_key(platform, release.version))
        log.info("agent release %s %s removed", platform, release.version)
        return release

    def forget(self) -> None:
        """Drop this process's copy of the release list (read again on the next heartbeat)."""
        self._cache = None

    async def _ready(self) -> dict[str, list[tuple[Version, Release]]]:
        """The stored releases by platform, newest version first, from the per-process copy."""
        now = self._clock()
        # A release added or removed by the command line (another process) shows once the copy is
        # this old; the process that changed it dropped its copy at once.
        if self._cache is None or now - self._loaded_at >= self.settings.release_cache_seconds:
            rows = await AgentRelease.select().where(AgentRelease.object_key.is_not_null())
            cache: dict[str, list[tuple[Version, Release]]] = {}
            for row in rows:
                release = Release.from_row(row)
                parsed = parse_version(release.version)
                if parsed is not None:
                    cache.setdefault(release.platform, []).append((parsed, release))
            for entries in cache.values():
                entries.sort(key=lambda entry: entry[0], reverse=True)
            self._cache, self._loaded_at = cache, now
        return self._cache

    # --- owners' policies ---------------------------------------------------------------------

    async def policy(self, user_id: uuid.UUID) -> Policy:
        """The owner's policy (``latest`` when they never chose one)."""
        row = (
            await AgentUpdatePolicy.select(AgentUpdatePolicy.policy, AgentUpdatePolicy.version)
            .where(AgentUpdatePolicy.user == user_id)
            .first()
        )
        if row is None or row["policy"] not in POLICIES:
            return Policy()
        return Policy(policy=row["policy"], version=row["version"])

    async def set_policy(self, user_id: uuid.UUID, policy: str, version: str | None) -> Policy:
        """Store the owner's policy. ``pin`` needs a version that exists for some platform; the
        other two take none."""
        if policy not in POLICIES:
            raise InvalidInput(
                f"policy must be one of {', '.join(POLICIES)}, not {policy!r}", field="policy"
            )
        if policy != "pin":
            if version is not None:
                raise InvalidInput(
                    f"a version goes with policy pin only, not {policy}", field="version"
                )
        else:
            if not version:
                raise InvalidInput("policy pin needs the version to pin to", field="version")
            parsed = _check_version(version)
            known = [r for r in await self.releases() if parse_version(r.version) == parsed]
            if not known:
                raise InvalidInput(
                    f"there is no release {version} for any platform (see the releases listed)",
                    field="version",
                )
            version = known[0].version
        values: dict[Any, Any] = {
            AgentUpdatePolicy.policy: policy,
            AgentUpdatePolicy.version: version,
            AgentUpdatePolicy.updated_at: utcnow(),
        }
        for _ in range(2):
            if await AgentUpdatePolicy.exists().where(AgentUpdatePolicy.user == user_id):
                await AgentUpdatePolicy.update(values).where(AgentUpdatePolicy.user == user_id)
                break
            try:
                await AgentUpdatePolicy.insert(
                    AgentUpdatePolicy(
                        id=uuid.uuid4(),
                        user=user_id,
                        policy=policy,
                        version=version,
                        updated_at=values[AgentUpdatePolicy.updated_at],
                    )
                )
                break
            except Exception:  # a concurrent first choice of the same owner: update it instead
                continue
        return Policy(policy=policy, version=version)  # type: ignore[arg-type]

    # --- the heartbeat ------------------------------------------------------------------------

    async def offer(
        self, user_id: uuid.UUID, platform: str | None, reported: str | None
    ) -> UpdateOffer | None:
        """The build this agent should move to, or ``None``: the owner holds updates, there is no
        target for its platform, it runs the target already (``latest``: or a newer one), or it
        sent no version that parses."""
        current = parse_version(reported)
        if current is None or platform is None:
            return None
        releases = (await self._ready()).get(platform)
        if not releases:
            return None
        policy = await self.policy(user_id)
        if policy.policy == "hold":
            return None
        if policy.policy == "pin":
            pinned = parse_version(policy.version)
            target = next((r for v, r in releases if v == pinned), None)
            if target is None or pinned == current:
                return None
        else:
            newest, target = releases[0]
            if newest <= current:
                return None
        assert target.object_key is not None  # only stored releases are cached
        url = self.storage.presign_get(target.object_key, expires_in=URL_SECONDS).url
        return UpdateOffer(target.version, url, target.sha256, target.size, target.signature)
