"""Continuing an old machine's snapshot repository on the machine that replaces it
(docs/recovery.md, "Continuing an old machine's repository").

The new agent has the old repository's key (unwrapped with the recovery code on the machine where
the code is typed); the server hands the repository row over to it, so that its snapshots add to
the same packs and its first one uploads only what differs. What the server checks:

* the owner's mark (the new agent inherits the old one; otherwise 404, as for any agent id);
* a proof derived from the recovery code (the same value a rotation presents): an API key and
  the mark alone cannot take another machine's repository away from it;
* the new agent has not started a repository of its own (its objects would be orphaned), and no
  snapshot of the old one is running.

The objects stay under the old agent's prefix (``Repository.prefix_agent``); every pre-signed URL
for the repository is made from the row, so the new agent writes there and the old agent, whose
API key no longer finds a repository of its own, gets a 409 for any snapshot (and cannot start a
second repository under that prefix). Pruning and retention work per repository row: the old
snapshots keep their packs until retention removes them, the new ones share them.
"""

from __future__ import annotations

import hmac
import uuid

from backend.agents.tables import Agent
from backend.backups.tables import BackupLog
from backend.continue_schemas import InheritedAgentOut, RepoContinueOut
from backend.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.recovery.tables import RecoveryKey
from backend.repos.tables import RepoObject, Repository, Snapshot
from backend.services.agent_registry import AgentIdentity
from backend.services.clock import utcnow
from backend.services.inheritance import readable_agent_ids, target_agent
from backend.services.key_material import check_wrapped, proof_digest, write_transaction
from backend.services.recovery import store_wrapped_key

__all__ = ["ContinuationService"]


async def _snapshot_counts(repo_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not repo_ids:
        return {}
    rows = await Snapshot.select(Snapshot.repository).where(Snapshot.repository.is_in(repo_ids))
    counts: dict[uuid.UUID, int] = {}
    for r in rows:
        counts[r["repository"]] = counts.get(r["repository"], 0) + 1
    return counts


class ContinuationService:
    """The agent's side of inheriting: which machines it replaces, and continuing one's
    repository."""

    async def inherited(self, agent: AgentIdentity) -> list[InheritedAgentOut]:
        """The agents this one replaces (the owner's marks, through chains), by name, with how
        many snapshots each one's repository holds and whether this agent continues it."""
        ids = sorted(await readable_agent_ids(agent.user_id, agent.id) - {agent.id})
        if not ids:
            return []
        names = {
            r["id"]: r["name"]
            for r in await Agent.select(Agent.id, Agent.name).where(
                (Agent.user == agent.user_id) & Agent.id.is_in(ids)
            )
        }
        repos = await Repository.select(
            Repository.id, Repository.agent, Repository.prefix_agent
        ).where(
            (Repository.user == agent.user_id)
            & (Repository.agent.is_in(ids) | Repository.prefix_agent.is_in(ids))
        )
        counts = await _snapshot_counts([r["id"] for r in repos])
        by_old: dict[uuid.UUID, tuple[int, bool]] = {}
        for r in repos:
            old = r["prefix_agent"] or r["agent"]
            by_old[old] = (counts.get(r["id"], 0), r["agent"] == agent.id)
        return [
            InheritedAgentOut(
                agent_id=str(aid),
                name=names.get(aid, ""),
                snapshots=by_old.get(aid, (0, False))[0],
                continued=by_old.get(aid, (0, False))[1],
            )
            for aid in ids
            if aid in names
        ]

    async def continue_from(
        self,
        agent: AgentIdentity,
        *,
        from_agent_id: str,
        proof: str,
        wrapped_key: str,
        version: int,
    ) -> RepoContinueOut:
        """Hand the repository of ``from_agent_id`` over to ``agent`` and store ``wrapped_key``
        as ``agent``'s wrapped repository key. Idempotent for the agent that already continues
        it. 404 without the owner's mark, 403 for a proof that is not the current code's, 409
        when this agent has a repository of its own, a snapshot of the old one runs, or
        another machine continues it already."""
        old = await target_agent(agent, from_agent_id, "fromAgentId")
        if old == agent.id:
            raise InvalidInput(
                "fromAgentId: this is this machine; give the id of the machine it replaces",
                field="fromAgentId",
            )
        check_wrapped(wrapped_key)
        digest = proof_digest(proof)
        name = (await Agent.select(Agent.name).where(Agent.id == old).first() or {"name": ""})[
            "name"
        ]
        async with write_transaction():
            recovery = (
                await RecoveryKey.select(RecoveryKey.version, RecoveryKey.proof_digest)
                .where(RecoveryKey.user == agent.user_id)
                .first()
            )
            if recovery is None:
                raise Conflict("recovery is not set up for this account: nothing to continue with")
            if not hmac.compare_digest(recovery["proof_digest"], digest):
                raise Forbidden("wrong recovery code: the proof does not match the current code")
            if recovery["version"] != version:
                raise Conflict(
                    f"the recovery key is at version {recovery['version']}, not {version}: wrap "
                    "the key for the current one"
                )
            repo = await Repository.select().where(Repository.agent == old).first()
            if repo is None:
                repo = await Repository.select().where(Repository.prefix_agent == old).first()
                if repo is None:
                    raise NotFound("fromAgentId: that machine has no snapshot repository")
                if repo["agent"] != agent.id:
                    raise Conflict("fromAgentId: another machine already continues that repository")
            else:
                await self._hand_over(agent, old, repo)
            await store_wrapped_key(agent, wrapped_key, version, utcnow())
        counts = await _snapshot_counts([repo["id"]])
        return RepoContinueOut(
            from_agent_id=str(old),
            from_agent_name=name,
            snapshots=counts.get(repo["id"], 0),
            pack_count=int(repo["pack_count"]),
        )

    async def _hand_over(
        self, agent: AgentIdentity, old: uuid.UUID, repo: dict[str, object]
    ) -> None:
        if not repo["initialized"]:
            raise Conflict("fromAgentId: that machine's repository holds no snapshot yet")
        if await BackupLog.exists().where(
            (BackupLog.agent == old)
            & (BackupLog.status == "running")
            & (BackupLog.backup_type == "incremental")
        ):
            raise Conflict("a snapshot of that machine is running; continue once it has finished")
        own = await Repository.select(Repository.id).where(Repository.agent == agent.id).first()
        if own is not None:
            used = await RepoObject.exists().where(
                (RepoObject.repository == own["id"]) & (RepoObject.state != "deleted")
            ) or await Snapshot.exists().where(Snapshot.repository == own["id"])
            if used:
                raise Conflict(
                    "this machine has started a snapshot repository of its own; a repository is "
                    "continued before the new machine's first snapshot"
                )
            await Repository.delete().where(Repository.id == own["id"])
        await Repository.update(
            {Repository.agent: agent.id, Repository.prefix_agent: repo["prefix_agent"] or old}
        ).where(Repository.id == repo["id"])
