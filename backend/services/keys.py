"""Pure builders for object keys, and the check of an agent-supplied filename."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from backend.errors import InvalidInput

__all__ = [
    "MAX_FILENAME",
    "backup_key",
    "config_prefix",
    "repo_key",
    "repo_prefix",
    "repository_key",
    "validate_filename",
]

MAX_FILENAME = 200
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def config_prefix(
    *, user_id: uuid.UUID | str, agent_id: uuid.UUID | str | None, config_id: uuid.UUID | str
) -> str:
    """``users/{userId}/agents/{agentId}/configs/{configId}`` (server mode: ``…/server/…``)."""
    if agent_id is None:
        return f"users/{user_id}/server/configs/{config_id}"
    return f"users/{user_id}/agents/{agent_id}/configs/{config_id}"


def repo_prefix(*, user_id: uuid.UUID | str, agent_id: uuid.UUID | str) -> str:
    """``users/{userId}/agents/{agentId}/repo``: an agent's snapshot repository."""
    return f"users/{user_id}/agents/{agent_id}/repo"


def repo_key(*, user_id: uuid.UUID | str, agent_id: uuid.UUID | str, kind: str, name: str) -> str:
    """The key of one repository object (docs/repository-format.md); ``kind`` and ``name`` were
    checked by the caller (kind one of four, name hex, a UUID or ``config``)."""
    prefix = repo_prefix(user_id=user_id, agent_id=agent_id)
    if kind == "config":
        return f"{prefix}/config"
    if kind == "data":
        return f"{prefix}/data/{name[:2]}/{name}"
    if kind == "index":
        return f"{prefix}/index/{name}"
    if kind == "snapshot":
        return f"{prefix}/snapshots/{name}"
    raise ValueError(f"unknown repository object kind {kind!r}")


def repository_key(repo: Mapping[str, Any], kind: str, name: str) -> str:
    """The key of one object of the repository row ``repo`` (``user``, ``agent``,
    ``prefix_agent``): a repository that a new machine continues keeps its objects under the old
    machine's prefix (docs/recovery.md, "Continuing an old machine's repository")."""
    owner = repo.get("prefix_agent") or repo["agent"]
    return repo_key(user_id=repo["user"], agent_id=owner, kind=kind, name=name)


def backup_key(
    *,
    user_id: uuid.UUID | str,
    agent_id: uuid.UUID | str | None,
    config_id: uuid.UUID | str,
    filename: str,
) -> str:
    validate_filename(filename)
    prefix = config_prefix(user_id=user_id, agent_id=agent_id, config_id=config_id)
    return f"{prefix}/{filename}"


def validate_filename(filename: str) -> None:
    """A safe charset, no ``/``, no ``..``, bounded length; a clear message for each failure."""
    if not filename:
        raise InvalidInput("filename: must not be empty", field="filename")
    if len(filename) > MAX_FILENAME:
        raise InvalidInput(
            f"filename: at most {MAX_FILENAME} characters (got {len(filename)})", field="filename"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise InvalidInput("filename: must not contain control characters", field="filename")
    if "/" in filename or "\\" in filename:
        raise InvalidInput("filename: must be a plain name, without '/' or '\\'", field="filename")
    if ".." in filename:
        raise InvalidInput("filename: must not contain '..'", field="filename")
    if not _SAFE.match(filename):
        raise InvalidInput(
            "filename: only letters, digits, '.', '_' and '-' are allowed, "
            "and it must not start with '.' or '-'",
            field="filename",
        )
