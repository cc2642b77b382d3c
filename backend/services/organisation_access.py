"""What an administrator's agent may read of other accounts with organisation recovery
(docs/recovery.md, "Organisation recovery"), and the record each such access leaves where the
owner sees it.

With an organisation key set up, an agent of an administrator's account may ask for:

* a signed GET of an **encrypted** ``full`` archive of any account (ciphertext, opened with the
  organisation code on the administrator's machine);
* the repository key of the machine that holds a **snapshot**, wrapped for the organisation key
  (it opens only with the organisation code), and pre-signed GETs for that repository's objects.

Every other caller, and a repository whose key was never wrapped for the current organisation
key, gets a 404, as for an id that does not exist. Each archive or key handed out is written to
the log of the machine that made the backup (``AgentLog``, the agent's page in the web console),
with the administrator's address: the owner sees who opened what, and when. The server still
holds only ciphertext and public or wrapped keys; the organisation code never reaches it.
"""

from __future__ import annotations

import uuid
from typing import Any

from backend.accounts.tables import User
from backend.agents.tables import Agent, AgentLog
from backend.backups.tables import BackupLog
from backend.errors import Conflict, InvalidInput, NotFound
from backend.recovery.tables import OrganisationKey, OrganisationWrappedKey
from backend.recovery_schemas import OrganisationSnapshotOut
from backend.repos.tables import Repository, Snapshot
from backend.services.agent_registry import AgentIdentity
from backend.services.clock import utcnow

__all__ = [
    "ACCESS_EVENT",
    "administrator",
    "organisation_reader",
    "record_access",
    "snapshot_key",
]

ACCESS_EVENT = "organisation_access"
"""``metadata.event`` of the agent log line an administrator's access leaves."""


async def administrator(agent: AgentIdentity) -> dict[str, Any] | None:
    """The caller's account (``{"email"}``) when it is an administrator's and an organisation key
    is set up; ``None`` otherwise (every such request is then a 404)."""
    if not await OrganisationKey.exists():
        return None
    row: dict[str, Any] | None = (
        await User.select(User.email, User.is_admin).where(User.id == agent.user_id).first()
    )
    return row if row is not None and row["is_admin"] else None


async def record_access(
    agent: AgentIdentity,
    admin_email: str,
    backup: dict[str, Any],
    what: str,
    *,
    holder: uuid.UUID | None = None,
) -> None:
    """Write, in the log of the machine that made ``backup`` (the owner's agent page), that the
    administrator ``admin_email`` was handed ``what`` of it through the agent ``agent``. When
    that machine was deleted, the log of ``holder`` (the machine whose repository holds it now)."""
    maker = backup.get("agent") or holder
    if maker is None:
        return  # a server-side backup: no machine of the owner to tell (its page shows the run)
    await AgentLog(
        id=uuid.uuid4(),
        agent=maker,
        level="warning",
        message=(
            f"An administrator ({admin_email}) was given {what} of backup {backup['id']} for "
            f"organisation recovery, on their machine “{agent.name}”."
        ),
        metadata={
            "event": ACCESS_EVENT,
            "backupId": str(backup["id"]),
            "administrator": admin_email,
            "administratorAgentId": str(agent.id),
            "administratorAgentName": agent.name,
            "what": what,
        },
        timestamp=utcnow(),
    ).save()


def _no_snapshot() -> NotFound:
    return NotFound("backupId: no such snapshot that organisation recovery may restore")


async def _wrapped_for(repo: dict[str, Any]) -> dict[str, Any] | None:
    """The repository's key wrapped for the current organisation key: its agent's, or (a
    repository a newer machine continues) the old machine's, which is the same key."""
    current = await OrganisationKey.select(OrganisationKey.version).first()
    if current is None:
        return None
    owners = [a for a in (repo["agent"], repo.get("prefix_agent")) if a is not None]
    rows = await OrganisationWrappedKey.select().where(
        OrganisationWrappedKey.agent.is_in(owners)
        & (OrganisationWrappedKey.version == current["version"])
    )
    by_agent = {r["agent"]: r for r in rows}
    return next((by_agent[a] for a in owners if a in by_agent), None)


async def snapshot_key(agent: AgentIdentity, backup_id: str) -> OrganisationSnapshotOut:
    """For an administrator's agent: the wrapped key of the repository that holds snapshot
    ``backup_id`` (of any account), recorded in the log of the machine that made it. 404 for
    anyone else, for an archive, and without an organisation key; 409 for a snapshot that is not
    completed or whose machine has not wrapped its key for the current organisation key yet."""
    admin = await administrator(agent)
    try:
        wanted = uuid.UUID(backup_id)
    except ValueError:
        raise _no_snapshot() from None
    if admin is None:
        raise _no_snapshot()
    backup = (
        await BackupLog.select(
            BackupLog.id,
            BackupLog.agent,
            BackupLog.status,
            BackupLog.backup_type,
            BackupLog.config.name.as_alias("config_name"),
        )
        .where(BackupLog.id == wanted)
        .first()
    )
    if backup is None or backup["backup_type"] != "incremental":
        raise _no_snapshot()
    if backup["status"] != "completed":
        raise Conflict(
            f"backupId: this snapshot is {backup['status']}, there is nothing to restore"
        )
    snap = await Snapshot.select(Snapshot.repository).where(Snapshot.backup == wanted).first()
    repo = (
        await Repository.select().where(Repository.id == snap["repository"]).first()
        if snap is not None
        else None
    )
    if repo is None:
        raise _no_snapshot()
    wrapped = await _wrapped_for(repo)
    if wrapped is None:
        raise Conflict(
            "the machine that holds this snapshot has not wrapped its repository key for the "
            "current organisation key yet (it does at its next backup)"
        )
    name = await Agent.select(Agent.name).where(Agent.id == repo["agent"]).first()
    await record_access(
        agent,
        admin["email"],
        backup,
        "the repository key (organisation-wrapped)",
        holder=repo["agent"],
    )
    return OrganisationSnapshotOut(
        backup_id=str(wanted),
        agent_id=str(repo["agent"]),
        agent_name=name["name"] if name else "",
        config_name=backup["config_name"] or "",
        wrapped_key=wrapped["wrapped"],
        version=wrapped["version"],
    )


async def organisation_reader(agent: AgentIdentity, agent_id: str | None) -> AgentIdentity:
    """The identity to read the repository of ``agent_id`` as, for an administrator's agent
    restoring with the organisation code: only a repository whose key is wrapped for the current
    organisation key (what the code can open). 404 for anyone else."""
    if not agent_id:
        raise InvalidInput("agentId: name the repository's agent", field="agentId")
    try:
        wanted = uuid.UUID(agent_id)
    except ValueError:
        raise NotFound("agentId: no such repository") from None
    if await administrator(agent) is None:
        raise NotFound("agentId: no such repository")
    repo = await Repository.select().where(Repository.agent == wanted).first()
    if repo is None or await _wrapped_for(repo) is None:
        raise NotFound("agentId: no such repository")
    return AgentIdentity(
        id=repo["agent"], user_id=repo["user"], name="", platform=None, version=None
    )
