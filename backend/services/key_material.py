"""What the server checks of the key material agents send it (docs/recovery.md), and the write
transaction the recovery services change it in, and how a wrapped key is kept.

Recovery, organisation recovery and continuing a repository all take the same kinds of values:
an ``age`` file holding a wrapped repository key, base64 fields of a bounded size, and a proof
derived from a recovery code whose digest is compared with the stored one. None of them is enough
to decrypt anything; the checks are about shape, so that a malformed value is a clear 400 and
never stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from datetime import datetime
from typing import Any, TypeVar

from piccolo.engine.sqlite import SQLiteEngine, TransactionType

from backend.errors import InvalidInput
from backend.recovery.tables import OrganisationWrappedKey, RecoveryKey, WrappedKey

__all__ = [
    "AGE_MAGIC",
    "MAX_WRAPPED",
    "b64_field",
    "check_wrapped",
    "proof_digest",
    "store_wrapped",
    "write_transaction",
]

AGE_MAGIC = b"age-encryption.org/v1\n"
MAX_WRAPPED = 4096
"""Bytes of an age file that holds a 32-byte key for one or two recipients: ~300; room to spare."""


def write_transaction() -> Any:
    """A transaction that takes SQLite's write lock at once: a deferred one that reads first
    fails with "database is locked" when another connection writes meanwhile."""
    db = RecoveryKey._meta.db
    if isinstance(db, SQLiteEngine):
        return db.transaction(transaction_type=TransactionType.immediate)
    return db.transaction()


def b64_field(text: str, field: str, *, low: int, high: int) -> bytes:
    """The bytes of base64 ``text`` (``field`` of the request), ``InvalidInput`` unless it is
    base64 of ``low`` to ``high`` bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field}: not base64", field=field) from None
    if not low <= len(raw) <= high:
        raise InvalidInput(f"{field}: must be {low} to {high} bytes", field=field)
    return raw


def check_wrapped(text: str, field: str = "wrappedKey") -> None:
    """``InvalidInput`` unless ``text`` is base64 of an ``age`` file of at most ``MAX_WRAPPED``
    bytes (a wrapped repository key)."""
    raw = b64_field(text, field, low=len(AGE_MAGIC) + 1, high=MAX_WRAPPED)
    if not raw.startswith(AGE_MAGIC):
        raise InvalidInput(f"{field}: not an age file", field=field)


def proof_digest(proof: str) -> str:
    """The hex SHA-256 the server keeps of a proof value (base64 of 32 bytes) a recovery code
    gives: compared, never the proof itself, with the one stored at set-up or rotation."""
    raw = b64_field(proof, "proof", low=32, high=32)
    return hashlib.sha256(raw).hexdigest()


_Wrapped = TypeVar("_Wrapped", WrappedKey, OrganisationWrappedKey)


async def store_wrapped(
    table: type[_Wrapped],
    agent_id: uuid.UUID,
    wrapped: str,
    version: int,
    now: datetime,
    **columns: Any,
) -> None:
    """Keep ``wrapped`` (for key ``version``) as the agent's row of ``table`` (the recovery key's
    or the organisation key's), replacing any earlier one; ``columns`` adds what only a new row
    sets. Call it inside a transaction."""
    updated = (
        await table.update({table.wrapped: wrapped, table.version: version, table.updated_at: now})
        .where(table.agent == agent_id)
        .returning(table.id)
    )
    if not updated:
        row = table(agent=agent_id, wrapped=wrapped, version=version, updated_at=now, **columns)
        await table.insert(row)
