"""Recovery keys (docs/recovery.md). The server keeps only public or wrapped material: the
recovery key's public half (an ``age`` recipient), the salt its private half is derived with, a
digest of a proof value (to check that whoever rotates the code knew the old one), and each
agent's repository key encrypted to that public key."""

from __future__ import annotations

from piccolo.columns import UUID, ForeignKey, Integer, OnDelete, Text, Timestamptz, Varchar
from piccolo.table import Table

from backend.accounts.tables import User
from backend.agents.tables import Agent


class RecoveryKey(Table, tablename="backapp_recovery_key"):
    """A user's recovery key: one per user, replaced (``version`` + 1) by each rotation."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, unique=True)
    public_key = Varchar(length=100, help_text="The age recipient (age1…) keys are wrapped for.")
    salt = Varchar(length=100, help_text="Base64; argon2id's salt for the code (not secret).")
    kdf = Varchar(length=100, help_text="argon2id's parameters, e.g. argon2id$v=19$m=65536,t=3,p=4")
    proof_digest = Varchar(
        length=64, help_text="Hex SHA-256 of the proof value the code gives (not the code)."
    )
    version = Integer(default=1, help_text="1 at set-up, + 1 at each rotation.")
    created_at = Timestamptz()
    rotated_at = Timestamptz(null=True, default=None)


class WrappedKey(Table, tablename="backapp_wrapped_key"):
    """An agent's repository key, encrypted (age) to its user's recovery key of ``version``."""

    id = UUID(primary_key=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, unique=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    wrapped = Text(help_text="Base64 of the age file that holds the repository key.")
    version = Integer(help_text="The recovery key version it is wrapped for.")
    updated_at = Timestamptz()


class OrganisationKey(Table, tablename="backapp_organisation_key"):
    """The organisation's recovery key (at most one row; the server's administrators are the
    organisation): every agent also wraps its repository key for it. Only the public half is
    here; the private half is derived from a code only the administrator has."""

    id = UUID(primary_key=True)
    public_key = Varchar(length=100, help_text="The age recipient (age1…) keys are wrapped for.")
    version = Integer(default=1, help_text="1 at set-up, + 1 at each replacement.")
    set_by = ForeignKey(
        references=User, on_delete=OnDelete.set_null, null=True, help_text="The administrator."
    )
    created_at = Timestamptz()
    updated_at = Timestamptz()


class OrganisationWrappedKey(Table, tablename="backapp_organisation_wrapped_key"):
    """An agent's repository key, encrypted (age) to the organisation key of ``version``."""

    id = UUID(primary_key=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, unique=True)
    wrapped = Text(help_text="Base64 of the age file that holds the repository key.")
    version = Integer(help_text="The organisation key version it is wrapped for.")
    updated_at = Timestamptz()
