"""Recovery codes and wrapped repository keys (docs/recovery.md): ``code`` is the pure part
(the code's format, argon2id -> X25519, age wrapping), ``account`` what talks to the server."""

from .account import (
    LOSS_WARNING,
    NOT_SET_UP,
    Continued,
    InheritedAgent,
    Issued,
    Recovery,
    RecoveryInfo,
    RecoveryPlane,
    WrappedRepoKey,
    keep_wrapped,
)
from .code import KdfParams, RecoveryKey, format_code, new_recovery_code, parse_code, wrap_key

__all__ = [
    "LOSS_WARNING",
    "NOT_SET_UP",
    "Continued",
    "InheritedAgent",
    "Issued",
    "KdfParams",
    "Recovery",
    "RecoveryInfo",
    "RecoveryKey",
    "RecoveryPlane",
    "WrappedRepoKey",
    "format_code",
    "keep_wrapped",
    "new_recovery_code",
    "parse_code",
    "wrap_key",
]
