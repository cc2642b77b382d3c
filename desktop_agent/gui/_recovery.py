"""The tray's recovery step, Qt-free (docs/recovery.md): whether the account has a recovery code,
making one (shown once), checking that the person kept it, and continuing the repository of an
old machine this one replaces. ``_windows/recovery.py`` only shows it; the blocking calls run on
the controller's pool. No code is logged, stored or kept after the window is done with it."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from desktop_agent.engine import (
    AgentSettings,
    ApiClient,
    Continued,
    InheritedAgent,
    Issued,
    Recovery,
    RepoKeyStore,
    config_dir,
)

__all__ = ["RecoveryOffer", "RecoverySource", "confirm_group", "group_matches"]


@dataclass(frozen=True, slots=True)
class RecoveryOffer:
    """What the recovery step offers this machine: set recovery up (the account has none), and
    the old machines whose repository it could continue."""

    configured: bool
    continuable: tuple[InheritedAgent, ...]
    key_wrapped: bool = False
    """This machine's repository key is stored wrapped for the current code."""

    @property
    def needed(self) -> bool:
        return not self.configured or bool(self.continuable)


def confirm_group(code: str) -> int:
    """Which group of ``code`` (1-based, not the check group) the person is asked to type back."""
    groups = code.split("-")
    return 1 + secrets.randbelow(max(len(groups) - 1, 1))


def group_matches(code: str, number: int, typed: str) -> bool:
    """Whether ``typed`` is group ``number`` of ``code`` (case and spaces do not matter; O reads
    as 0, I and L as 1, as everywhere a code is typed)."""
    want = code.split("-")[number - 1]
    got = re.sub(r"\s", "", typed).upper().replace("O", "0").replace("I", "1").replace("L", "1")
    return secrets.compare_digest(got, want)


class RecoverySource:
    """The blocking calls, with the pairing's settings and API key."""

    def __init__(self, settings: AgentSettings, api_key: str) -> None:
        self.settings = settings
        self.api_key = api_key

    def _recovery(self, client: ApiClient) -> Recovery:
        return Recovery(
            client, RepoKeyStore(config_dir()), server_url=self.settings.server_url or ""
        )

    def offer(self) -> RecoveryOffer:
        """Whether recovery is set up (and covers this machine's key), and the machines this one
        replaces that have snapshots it does not continue yet."""
        assert self.settings.server_url
        with ApiClient(self.settings.server_url, self.api_key) as client:
            state = client.recovery_state()
            agents = client.inherited_agents()
        return RecoveryOffer(
            state.configured,
            tuple(a for a in agents if a.snapshots and not a.continued),
            key_wrapped=state.configured and state.agent_key_version == state.version,
        )

    def create(self) -> Issued:
        """Set recovery up: a new code, to be shown once."""
        assert self.settings.server_url
        with ApiClient(self.settings.server_url, self.api_key) as client:
            return self._recovery(client).init()

    def continue_from(self, code: str, agent_id: str) -> Continued:
        """Continue the repository of ``agent_id`` with ``code``."""
        assert self.settings.server_url
        with ApiClient(self.settings.server_url, self.api_key) as client:
            return self._recovery(client).continue_from(code, agent_id)
