"""Recovery keys: per user the public half of the recovery key, per agent its wrapped repository
key (docs/recovery.md). Nothing here can decrypt anything without the user's recovery code."""
