"""Request and response shapes of the recovery endpoints (``docs/agent-api.md``, "Extensions:
recovery keys"). Litestar checks these limits before a handler runs."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from backend.schemas import Camel, Uuid

AgeRecipient = Annotated[str, Meta(pattern="^age1[02-9ac-hj-np-z]{58}$")]
Salt = Annotated[str, Meta(min_length=20, max_length=100, pattern="^[A-Za-z0-9+/]+={0,2}$")]
Kdf = Annotated[str, Meta(pattern=r"^argon2id\$v=19\$m=[0-9]{1,8},t=[0-9]{1,3},p=[0-9]{1,3}$")]
Proof = Annotated[str, Meta(min_length=44, max_length=44)]
Wrapped = Annotated[str, Meta(min_length=1, max_length=6000)]
Version = Annotated[int, Meta(ge=1, le=2**31 - 1)]
MAX_KEYS = 10_000


class RecoveryOut(Camel):
    configured: bool
    public_key: str | None = None
    salt: str | None = None
    kdf: str | None = None
    version: int | None = None
    created_at: str | None = None
    rotated_at: str | None = None
    agent_key_version: int | None = None
    """The version the asking agent's wrapped key is for (``None``: it has none)."""
    organisation_key: str | None = None
    """The organisation's recovery recipient (``age1…``), when an administrator set one up:
    agents wrap their key and encrypt their encrypted archives for it too."""
    organisation_version: int | None = None
    agent_organisation_key_version: int | None = None


class OrganisationRestoreRequest(Camel, forbid_unknown_fields=True):
    backup_id: Uuid


class OrganisationKeyRequest(Camel, forbid_unknown_fields=True):
    public_key: Annotated[str, Meta(max_length=200)]


class OrganisationOut(Camel):
    configured: bool
    public_key: str | None = None
    version: int | None = None
    set_by: str | None = None
    updated_at: str | None = None
    wrapped_agents: int = 0


class RecoverySetupRequest(Camel, forbid_unknown_fields=True):
    public_key: AgeRecipient
    salt: Salt
    kdf: Kdf
    proof: Proof


class WrappedKeyItem(Camel, forbid_unknown_fields=True):
    agent_id: Uuid
    wrapped_key: Wrapped


class RecoveryRotateRequest(Camel, forbid_unknown_fields=True):
    old_version: Version
    old_proof: Proof
    public_key: AgeRecipient
    salt: Salt
    kdf: Kdf
    proof: Proof
    keys: Annotated[list[WrappedKeyItem], Meta(max_length=MAX_KEYS)]


class RepoKeyPutRequest(Camel, forbid_unknown_fields=True):
    wrapped_key: Wrapped
    version: Version


class RepoKeyPutResponse(Camel):
    version: int
    success: bool = True


class RepoKeyOut(Camel):
    agent_id: str
    agent_name: str
    wrapped_key: str
    version: int
    updated_at: str


class RepoKeysOut(Camel):
    keys: list[RepoKeyOut]


class OrganisationSnapshotRequest(Camel, forbid_unknown_fields=True):
    backup_id: Uuid


class OrganisationSnapshotOut(Camel):
    """The repository key of the machine holding a snapshot, wrapped for the organisation key."""

    backup_id: str
    agent_id: str
    """The repository's agent: the ``agentId`` its objects are read with."""
    agent_name: str
    config_name: str
    wrapped_key: str
    version: int
