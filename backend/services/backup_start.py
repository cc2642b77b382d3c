"""What an agent's start of a backup (an archive or a snapshot) becomes before its log is opened:
the checks both kinds of start make, and the :class:`NewBackup` they hand to the backup service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from backend.errors import InvalidInput
from backend.services.agents import AgentIdentity
from backend.services.runs import check_run_request
from backend.storage import PartChecksum


@dataclass(frozen=True)
class NewBackup:
    """A backup about to be uploaded: whose, of which config, the file, and why it runs."""

    user_id: uuid.UUID
    agent_id: uuid.UUID | None
    """None for a server-side backup (the server runs it)."""
    config_id: uuid.UUID
    config_name: str
    filename: str
    filesize: int | None = None
    """The runner's estimate before the archive is written (shown while it runs)."""
    multipart: bool = False
    size: int | None = None
    """The exact size, when known before the upload (signed into a single PUT)."""
    sha256: str | None = None
    part_checksum: PartChecksum = "sha256"
    """With ``multipart``: the checksum every part carries."""
    trigger: str = "manual"
    attempt: int = 1
    max_attempts: int = 1
    run_request: uuid.UUID | None = None
    """The Back Up Now request this backup answers."""


class RetriedStart(Protocol):
    """What an agent's start request (archive or snapshot) says of retries and Back Up Now."""

    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int | None: ...
    @property
    def run_request_id(self) -> str | None: ...
    @property
    def trigger(self) -> str | None: ...


async def agent_backup(
    agent: AgentIdentity, req: RetriedStart, config_id: uuid.UUID, config_name: str, filename: str
) -> NewBackup:
    """The new backup an agent's start asks for, once its attempt numbers hold (``attempt`` at
    most ``maxAttempts``) and the Back Up Now request it answers is this config's."""
    max_attempts = req.max_attempts if req.max_attempts is not None else req.attempt
    if req.attempt > max_attempts:
        raise InvalidInput(
            f"attempt: {req.attempt} is more than maxAttempts ({max_attempts})", field="attempt"
        )
    run_request = None
    if req.run_request_id is not None:
        run_request = await check_run_request(agent.id, config_id, req.run_request_id)
    return NewBackup(
        user_id=agent.user_id,
        agent_id=agent.id,
        config_id=config_id,
        config_name=config_name,
        filename=filename,
        trigger=req.trigger or ("request" if run_request is not None else "manual"),
        attempt=req.attempt,
        max_attempts=max_attempts,
        run_request=run_request,
    )
