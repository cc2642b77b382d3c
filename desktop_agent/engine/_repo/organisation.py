"""An administrator restoring or listing a snapshot of any machine of the server with the
organisation recovery code (docs/recovery.md, "Organisation recovery").

The code is checked against the organisation key the server holds before anything else is asked
for; the server then hands this agent (an administrator's) the key of the repository holding the
snapshot, wrapped for the organisation key, and records that in the log of the machine that made
it. The key is unwrapped here and kept in memory only: it never goes to this machine's keychain,
and the repository's local cache lives in a temporary folder removed on ``close``, so nothing of
the other account stays on the administrator's machine but the files restored.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, cast

from .._recovery.account import OrganisationSnapshotKey, Recovery, RecoveryPlane
from .._recovery.code import RecoveryKey
from .._settings import AgentSettings
from ..repo_protocol import ObjectStore
from .access import InheritedPlane, Snapshots

__all__ = ["OrganisationSnapshots"]


class OrganisationSnapshots(Snapshots):
    """``Snapshots`` of other machines, opened with the organisation ``code``: call ``open`` with
    the snapshot's id, then ``restore`` or ``entries`` with the ``agent_id`` it returns."""

    def __init__(
        self,
        client: Any,
        store: ObjectStore,
        *,
        server_url: str,
        code: str,
        workers: int = 4,
        temp_dir: Path | None = None,
    ) -> None:
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
        self._temp = tempfile.TemporaryDirectory(prefix="backapp-organisation-", dir=temp_dir)
        super().__init__(
            client,
            store,
            server_url=server_url,
            key_source=self._opened_key,
            cache_dir=Path(self._temp.name),
            workers=workers,
        )
        self._code = code
        self._identity: RecoveryKey | None = None
        self._opened: dict[str, bytes] = {}

    @classmethod
    def connect(cls, settings: AgentSettings, api_key: str, code: str) -> OrganisationSnapshots:
        """Over the agent API and storage ``settings`` name."""
        from .._transport.connect import connect

        client, storage = connect(settings, api_key)
        return cls(
            client,
            storage,
            server_url=settings.server_url or "",
            code=code,
            temp_dir=settings.effective_temp_dir,
        ).owning(client, storage)

    def open(self, backup_id: str) -> OrganisationSnapshotKey:
        """Check the code (``WrongRecoveryCode`` before any key is asked for), then get the
        organisation-wrapped key of the repository holding ``backup_id`` and unwrap it
        (``IntegrityError`` when it is damaged). ``NotFoundError`` when the server hands this
        agent no such snapshot (not an administrator's agent, no organisation key, or no such
        snapshot). Returns what the server said; its ``agent_id`` names the repository."""
        identity = self.identity()
        found: OrganisationSnapshotKey = self.client.organisation_snapshot(backup_id)
        self._opened[found.agent_id] = identity.unwrap(found.wrapped)
        return found

    def identity(self) -> RecoveryKey:
        """The organisation key the code gives, checked against the server's public key
        (``WrongRecoveryCode`` otherwise); it also opens encrypted archives."""
        if self._identity is None:
            self._identity = Recovery(
                cast(RecoveryPlane, self.client), self.keys, server_url=self.server_url
            ).organisation_identity(self._code)
        return self._identity

    def _opened_key(self, agent_id: str) -> bytes | None:
        return self._opened.get(agent_id)

    def reader_plane(self, agent_id: str) -> Any:
        return InheritedPlane(self.client, agent_id, organisation=True)

    def __enter__(self) -> OrganisationSnapshots:
        return self

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._opened.clear()
            self._identity = None
            self._temp.cleanup()
