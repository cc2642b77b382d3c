from __future__ import annotations

from piccolo.columns import (
    JSON,
    UUID,
    BigInt,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from backend.accounts.tables import User


class Agent(Table, tablename="backapp_agent"):
    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=200)
    api_key_digest = Varchar(
        length=64,
        unique=True,
        help_text="HMAC-SHA256 of the API key with the server secret; the key itself is never stored.",
    )
    api_key_prefix = Varchar(length=16, help_text="The key's first characters, for recognising it.")
    active = Boolean(default=True, help_text="False once deactivated: its key is refused.")
    platform = Varchar(length=32, null=True, default=None)
    version = Varchar(length=64, null=True, default=None)
    last_seen = Timestamptz(null=True, default=None)
    timezone = Varchar(
        length=64,
        null=True,
        default=None,
        help_text="IANA zone the agent reports; schedules use it.",
    )
    mode = Varchar(
        length=16,
        null=True,
        default=None,
        help_text="How the agent runs, as its heartbeat says: daemon, tray or oneshot (cron).",
    )
    limits = JSON(
        null=True,
        default=None,
        help_text="Bandwidth limits set from the web console (see desktop_agent.engine.bandwidth).",
    )
    parallel_backups = Integer(
        null=True,
        default=None,
        help_text="Configs backed up at once, set from the web console (1-4; null: the machine's).",
    )
    last_backup_failed = Boolean(
        default=False, help_text="Whether the agent's most recent finished backup failed."
    )
    offline_since = Timestamptz(
        null=True,
        default=None,
        help_text="When the presence round found it offline (services/offline.py); cleared when "
        "it beats again. Its configs rank offline on the dashboard meanwhile.",
    )
    created_at = Timestamptz()
    updated_at = Timestamptz()


class AgentLog(Table, tablename="backapp_agent_log"):
    id = UUID(primary_key=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, index=True)
    level = Varchar(length=16)
    message = Text()
    metadata = JSON(null=True, default=None)
    timestamp = Timestamptz(index=True)


class AgentInheritance(Table, tablename="backapp_agent_inheritance"):
    """The owner's mark that agent ``agent`` replaces ``from_agent`` (a new laptop inherits the
    old one's backups): ``agent`` may then list, restore and read the repository of
    ``from_agent``. Both belong to ``user``; deleting either agent deletes the mark. Unique by
    (agent, from_agent)."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, index=True)
    from_agent = ForeignKey(references=Agent, on_delete=OnDelete.cascade, index=True)
    created_by = ForeignKey(
        references=User,
        on_delete=OnDelete.set_null,
        null=True,
        default=None,
        help_text="Who made the mark (the owner, signed in).",
    )
    created_at = Timestamptz()


class PairingCode(Table, tablename="backapp_pairing_code"):
    """A one-time code that lets a new machine fetch its own API key (``backapp-agent pair``, the
    tray's first-run window). Only a keyed digest of the code is kept, as for API keys."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=200, help_text="The name the new agent gets.")
    code_digest = Varchar(
        length=64,
        unique=True,
        help_text="HMAC-SHA256 of the normalised code with the server secret; never the code.",
    )
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)
    agent = ForeignKey(
        references=Agent,
        on_delete=OnDelete.set_null,
        null=True,
        default=None,
        help_text="The agent the code created, once used.",
    )
    created_at = Timestamptz()


class KeyRevocations(Table, tablename="backapp_key_revocations"):
    """One row (``id`` 1): how many times an agent key was revoked (deactivated, deleted).

    Server processes cache agent keys until told otherwise. Without Redis (and without PostgreSQL's
    LISTEN), a process learns of a revocation made by another process by this count moving: it
    reads the one row when it authenticates, and forgets its cached keys when the count changed."""

    id = Integer(primary_key=True)
    revoked = BigInt(default=0)


class AgentRelease(Table, tablename="backapp_agent_release"):
    """One agent build the server hands out (``backapp agent-release add``): the object at
    ``object_key`` in the bucket and the publisher's signature over (platform, version, sha256,
    size), which agents check against the release key built into them. Unique by (platform,
    version)."""

    id = UUID(primary_key=True)
    platform = Varchar(length=16, help_text="sys.platform of the build: linux, darwin or win32.")
    version = Varchar(length=64, help_text="PEP 440 version; compared as such, not as text.")
    sha256 = Varchar(length=64, help_text="Hex SHA-256 of the build.")
    size = BigInt()
    signature = Varchar(length=128, help_text="Base64 Ed25519 signature by the release key.")
    object_key = Varchar(
        length=300,
        null=True,
        default=None,
        help_text="Set once the build is stored; until then (an add under way) no agent is offered it.",
    )
    created_at = Timestamptz()


class AgentUpdatePolicy(Table, tablename="backapp_agent_update_policy"):
    """An owner's choice for the updates of their whole fleet (``/api/agent-updates``): ``latest``
    (the default, also when there is no row), ``pin`` to ``version``, or ``hold``."""

    id = UUID(primary_key=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, unique=True)
    policy = Varchar(length=16, default="latest")
    version = Varchar(length=64, null=True, default=None)
    updated_at = Timestamptz()
