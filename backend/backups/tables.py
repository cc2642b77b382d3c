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


class BackupLog(Table, tablename="backapp_backup_log"):
    """One backup: created 'running' at backup/start, finished 'completed' or 'failed'."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    config = ForeignKey(
        references=BackupConfig, on_delete=OnDelete.set_null, null=True, default=None, index=True
    )
    agent = ForeignKey(
        references=Agent, on_delete=OnDelete.set_null, null=True, default=None, index=True
    )
    config_name = Varchar(length=200, help_text="The config's name when the backup ran.")
    status = Varchar(length=16, index=True, help_text="running, completed or failed.")
    s3_path = Varchar(length=1024, unique=True, help_text="Full object key.")
    filename = Varchar(length=255)
    filesize_estimate = BigInt(null=True, default=None)
    expected_size = BigInt(null=True, default=None, help_text="Exact size signed into the URL.")
    expected_sha256 = Varchar(length=64, null=True, default=None)
    upload_id = Varchar(length=1024, null=True, default=None, help_text="Multipart upload id.")
    upload_state = Varchar(
        length=16, default="single", help_text="single, multipart, assembled or aborted."
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
