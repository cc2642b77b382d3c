"""Errors of the snapshot repository.

AgentError
└── RepositoryError           the repository cannot be used as asked
    ├── CorruptObject         an object or blob fails its checks (damaged, truncated, other key)
    ├── MissingObject         an object the snapshot needs is not in storage
    └── WrongKey              the repository's config does not open with this machine's key
"""

from __future__ import annotations

from .._errors import AgentError


class RepositoryError(AgentError):
    """The snapshot repository cannot be used as asked."""


class CorruptObject(RepositoryError):
    """An object or blob failed its integrity checks."""


class MissingObject(RepositoryError):
    """An object the operation needs is not in storage."""


class WrongKey(RepositoryError):
    """This machine's repository key does not open the repository."""
