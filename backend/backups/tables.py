from __future__ import annotations

from piccolo.columns import (
    JSON,
    UUID,
    BigInt,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from backend.accounts.tables import User
from backend.agents.tables import Agent


class BackupConfig(Table, tablename="backapp_backup_config"):
    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=200)
    execution_mode = Varchar(length=16, default="server", help_text="'server' or 'agent'.")
    agent = ForeignKey(
        references=Agent,
        on_delete=OnDelete.set_null,
        null=True,
        default=None,
        index=True,
        help_text="The agent that runs this config; null = server-side backup.",
    )
    sources = JSON(default=[], help_text='[{"path": "..."}], paths on the executing machine.')
    excludes = JSON(default=[], help_text="Glob patterns left out of the archive.")
    options = JSON(default={}, help_text="type, compression, encryption, retentionDays, …")
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # Kept by services/last_backup.py whenever a backup of the config starts, ends or changes
    # status, so the dashboard and the alert round need not look up every config's history.
    last_backup_id = UUID(null=True, default=None, help_text="Its newest backup (any status).")
    last_status = Varchar(
        length=16, null=True, default=None, help_text="The status of its newest backup."
    )
    last_ok_at = Timestamptz(
        null=True,
        default=None,
        help_text="When its newest completed backup finished (its start when no end is known).",
    )
    alert_due_at = Timestamptz(
        null=True,
        default=None,
        index=True,
        help_text="Before this, its missed-backup alert can neither open nor clear; null: evaluate "
        "it again.",
    )
    revision = Integer(
        default=0,
        help_text="Counts changes that the periodic rounds must see (a backup, an edit): a round "
        "stores its due times only for configs still at the revision it read.",
    )
    retention_due_at = Timestamptz(
        null=True,
        default=None,
        index=True,
        help_text="Before this, retention removes none of its backups; null: evaluate it again.",
    )
    severity = Integer(
        default=2,
        help_text="Its rank on the dashboard, worst first (services/last_backup.py): 0 failing, "
        "1 blocked, 2 no recent verified backup, 3 its agent offline, 4 running, 5 fine. Indexed "
        "with the user.",
    )


class BackupLog(Table, tablename="backapp_backup_log"):
    """One backup: created 'running' at backup/start, finished 'completed' or 'failed', or
    'cancelled' (stopped on purpose; not a failure), or 'interrupted' when its runner died (the
    lease that guarded it lapsed without a complete)."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    config = ForeignKey(
        references=BackupConfig, on_delete=OnDelete.set_null, null=True, default=None, index=True
    )
    agent = ForeignKey(
        references=Agent, on_delete=OnDelete.set_null, null=True, default=None, index=True
    )
    config_name = Varchar(length=200, help_text="The config's name when the backup ran.")
    status = Varchar(
        length=16,
        index=True,
        help_text="running, completed, failed, interrupted (its runner died) or expired.",
    )
    s3_path = Varchar(length=1024, unique=True, help_text="Full object key.")
    filename = Varchar(length=255)
    filesize_estimate = BigInt(null=True, default=None)
    expected_size = BigInt(null=True, default=None, help_text="Exact size signed into the URL.")
    expected_sha256 = Varchar(length=64, null=True, default=None)
    upload_id = Varchar(length=1024, null=True, default=None, help_text="Multipart upload id.")
    upload_state = Varchar(
        length=16, default="single", help_text="single, multipart, assembled or aborted."
    )
    part_checksum = Varchar(
        length=8,
        default="sha256",
        help_text="The checksum each multipart part carries: sha256 or crc32.",
    )
    size = BigInt(null=True, default=None, help_text="Verified size of the stored object.")
    sha256 = Varchar(length=64, null=True, default=None)
    files_processed = Integer(null=True, default=None)
    bytes_transferred = BigInt(null=True, default=None)
    duration_ms = BigInt(null=True, default=None)
    errors = JSON(default=[])
    error = Text(null=True, default=None, help_text="Why the backup failed.")
    started_at = Timestamptz(index=True)
    completed_at = Timestamptz(null=True, default=None)
    trigger = Varchar(
        length=16,
        default="manual",
        help_text="What started it: manual, schedule, retry, request (Back Up Now) or server.",
    )
    attempt = Integer(default=1, help_text="1 for a first try, 2.. for automatic retries.")
    max_attempts = Integer(default=1, help_text="How many tries the runner allows in all.")
    run_request = Varchar(
        length=36, null=True, default=None, help_text="The Back Up Now request it answers."
    )
    progress = JSON(null=True, default=None, help_text="The latest progress event while running.")
    deleted_at = Timestamptz(
        null=True, default=None, help_text="When retention deleted the object (status 'expired')."
    )
    backup_type = Varchar(
        length=16, default="full", help_text="full (one archive) or incremental (a snapshot)."
    )
    new_bytes = BigInt(
        null=True, default=None, help_text="A snapshot's new data (what it uploaded)."
    )
    lease_token = Varchar(
        length=64,
        null=True,
        default=None,
        help_text="The token of the config lease its runner held when it started: the run is alive "
        "while that lease is; null for a runner that took no lease.",
    )
    catalog_at = Timestamptz(
        null=True,
        default=None,
        index=True,
        help_text="When the metadata object beside the completed backup was written (null: not "
        "yet, or removed after it expired); the catalog round writes the missing ones.",
    )


class Lease(Table, tablename="backapp_lease"):
    """A named, expiring lock shared by every server process and agent (one row per name).

    ``config:{id}`` guards one config's run; ``server:{task}`` elects one server process for a
    periodic task. A holder that dies stops renewing and the lease lapses at ``expires_at``.
    """

    id = UUID(primary_key=True)
    name = Varchar(length=200, unique=True)
    holder = Varchar(
        length=200, help_text="Who holds it, for people: 'agent <name>', 'server pid'."
    )
    token = Varchar(length=64, help_text="Secret the holder presents to renew or release.")
    acquired_at = Timestamptz()
    expires_at = Timestamptz(index=True)
    owner = Varchar(
        length=64,
        null=True,
        default=None,
        help_text="Who holds it, for the server: 'agent:{id}' or 'server' (null: unknown).",
    )
    instance = Varchar(
        length=64,
        null=True,
        default=None,
        help_text="The holder's process (an agent's per-process id): a restarted agent may take "
        "over a lease that a dead process of its own still holds.",
    )


class RunRequest(Table, tablename="backapp_run_request"):
    """A Back Up Now request, waiting for the config's agent (or the server) to pick it up."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    config = ForeignKey(references=BackupConfig, on_delete=OnDelete.cascade, index=True)
    agent = ForeignKey(
        references=Agent, on_delete=OnDelete.cascade, null=True, default=None, index=True
    )
    status = Varchar(
        length=16, default="pending", index=True, help_text="pending, started, expired."
    )
    requested_at = Timestamptz()
    started_at = Timestamptz(null=True, default=None)
    backup_id = Varchar(length=36, null=True, default=None)


class Alert(Table, tablename="backapp_alert"):
    """Something a user must know: a missed backup, an agent offline too long, a failed backup."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    kind = Varchar(length=32, help_text="missed_backup, agent_offline or backup_failed.")
    subject = Varchar(
        length=80, index=True, help_text="'config:{id}', 'agent:{id}' or 'backup:{id}'."
    )
    message = Text()
    created_at = Timestamptz(index=True)
    resolved_at = Timestamptz(null=True, default=None, index=True)
    notified_at = Timestamptz(null=True, default=None)
    notify_error = Text(null=True, default=None, help_text="Why the last notification failed.")


class RestoreJob(Table, tablename="backapp_restore_job"):
    """A restore the owner asked for from the web console, for an agent to perform
    (``POST /api/backups/{id}/restore``): pending → running → completed | failed; a pending one
    nobody picked up within a day becomes expired."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    backup = ForeignKey(references=BackupLog, on_delete=OnDelete.cascade, index=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, index=True)
    paths = JSON(default=[], help_text="PathFilter patterns; empty: everything.")
    target = Text(help_text="The folder on the agent's machine to restore into.")
    conflict = Varchar(length=16, default="keep-both", help_text="keep-both or overwrite.")
    status = Varchar(
        length=16,
        default="pending",
        index=True,
        help_text="pending, running, completed, failed, expired.",
    )
    files = BigInt(default=0, help_text="Files, folders and links restored.")
    bytes = BigInt(default=0, help_text="Bytes of file content written.")
    renamed = Integer(default=0, help_text="Existing files kept, the restored copy beside them.")
    replaced = Integer(default=0, help_text="Existing files replaced (overwrite).")
    unchanged = Integer(default=0, help_text="Files already there with the same content.")
    skipped = Integer(default=0, help_text="Members not restored (unsafe, or in the way).")
    error = Text(null=True, default=None)
    created_at = Timestamptz()
    expires_at = Timestamptz(help_text="A pending job not started by then expires.")
    started_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)
