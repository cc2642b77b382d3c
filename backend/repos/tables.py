"""Snapshot repositories (docs/repository-format.md): one per agent, the objects in it, and the
snapshots committed to it. The server never sees what the objects hold; it keeps what it needs to
sign uploads, check them, and decide later what no snapshot uses any more."""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    UUID,
    BigInt,
    Boolean,
    Bytea,
    ForeignKey,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from backend.accounts.tables import User
from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, BackupLog


class Repository(Table, tablename="backapp_repository"):
    """An agent's snapshot repository, under ``users/{user}/agents/{prefix_agent or agent}/repo/``."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, unique=True)
    created_at = Timestamptz()
    initialized = Boolean(
        default=False, help_text="Whether its encrypted 'config' object is stored."
    )
    pack_count = BigInt(
        default=0, help_text="The next pack sequence number (packs are numbered 0, 1, 2, …)."
    )
    compact_requested_at = Timestamptz(
        null=True,
        default=None,
        help_text="When maintenance asked the agent to compact it (null: not asked).",
    )
    compacted_at = Timestamptz(
        null=True, default=None, help_text="When its last compaction was committed."
    )
    prefix_agent = UUID(
        null=True,
        default=None,
        index=True,
        help_text="The agent under whose prefix the objects are, when not ``agent``: a new "
        "machine that continues an old one's repository owns it, the objects stay where they are "
        "(a plain id, not a foreign key: it outlives the old agent).",
    )


class RepoObject(Table, tablename="backapp_repo_object"):
    """One object of a repository: a pack (``data``), an ``index``, a ``snapshot`` or the
    ``config``. Unique by (repository, kind, name)."""

    id = UUID(primary_key=True)
    repository = ForeignKey(references=Repository, on_delete=OnDelete.cascade, index=True)
    kind = Varchar(length=16, help_text="config, data, index or snapshot.")
    name = Varchar(length=64, help_text="Hex SHA-256 (data, index), the backup id, or 'config'.")
    seq = BigInt(null=True, default=None, help_text="The pack's sequence number (data only).")
    size = BigInt()
    sha256 = Varchar(length=64)
    state = Varchar(
        length=16,
        default="pending",
        index=True,
        help_text="pending (URL handed out), stored (seen in storage), deleting (pruning), "
        "retired (replaced by a compaction, kept for its grace window) or deleted.",
    )
    backup = Varchar(
        length=36, null=True, default=None, help_text="The backup that first asked to upload it."
    )
    created_at = Timestamptz()
    stored_at = Timestamptz(null=True, default=None)
    deleted_at = Timestamptz(null=True, default=None)


class Snapshot(Table, tablename="backapp_snapshot"):
    """A committed snapshot: the backup it is, and what it needs from the repository."""

    id = UUID(primary_key=True)
    backup = ForeignKey(references=BackupLog, on_delete=OnDelete.cascade, unique=True)
    repository = ForeignKey(references=Repository, on_delete=OnDelete.cascade, index=True)
    packs = Bytea(help_text="The pack bitmap the agent committed (zlib-compressed bits).")
    pack_total = BigInt(default=0, help_text="How many packs the bitmap names.")
    index_names = JSON(default=[], help_text="Names of the index objects it wrote.")
    parent = Varchar(length=36, null=True, default=None)
    new_bytes = BigInt(default=0)
    created_at = Timestamptz()


class Compaction(Table, tablename="backapp_compaction"):
    """One compaction of a repository by its agent (services/compaction.py): ``running`` while
    the agent rewrites packs (until ``expires_at``), then ``committed``, ``abandoned`` (the agent
    went quiet) or ``failed`` (the agent gave up)."""

    id = UUID(primary_key=True)
    repository = ForeignKey(references=Repository, on_delete=OnDelete.cascade, index=True)
    state = Varchar(length=16, default="running", index=True)
    started_at = Timestamptz()
    expires_at = Timestamptz(help_text="A running compaction is abandoned after this.")
    committed_at = Timestamptz(null=True, default=None)
    snapshots = JSON(default=[], help_text="Ids of the backups it may rewrite (live at start).")
    held = Bytea(help_text="Bitmap of the packs it retired (zlib-compressed bits).")
    release_at = Timestamptz(
        null=True, default=None, help_text="Its retired packs may be pruned after this."
    )
    previous = JSON(default={}, help_text="Each rewritten snapshot's bitmap before (base64).")
    packs_retired = BigInt(default=0)
    bytes_retired = BigInt(default=0)
    packs_written = BigInt(default=0)
    bytes_written = BigInt(default=0)
    error = Text(null=True, default=None)
    reported = Boolean(default=False, help_text="Whether a maintenance report counted it.")


class ConfigCheck(Table, tablename="backapp_config_check"):
    """The latest agent report of one kind for a configuration: ``check`` (``backapp-agent
    check``: the snapshot's structure, and a share of its packs read and verified) or ``drill``
    (a sample of files restored and verified). One row per (config, kind), replaced by each
    report; ``ok_at``/``ok_details`` keep the latest passing one, so a failure does not hide when
    the config was last proven good."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    config = ForeignKey(references=BackupConfig, on_delete=OnDelete.cascade, index=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.set_null, null=True, default=None)
    kind = Varchar(length=8, help_text="check or drill.")
    at = Timestamptz(help_text="When the latest report arrived.")
    ok = Boolean(default=False)
    backup = Varchar(length=36, null=True, default=None, help_text="The snapshot it looked at.")
    summary = Text(default="", help_text="The result in words, as the pages show it.")
    details = JSON(default={}, help_text="Counts, measurements and problems, as reported.")
    ok_at = Timestamptz(null=True, default=None, help_text="When one last passed.")
    ok_details = JSON(null=True, default=None, help_text="The details of the last passing one.")
