"""This computer's pairing with a server, without Qt: the settings (server URL, agent id) on disk, the
API key in the keychain, and the one call that asks the server what it has assigned (a poll's, and
the check of a new key's)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace

from desktop_agent import __version__
from desktop_agent.engine import (
    AgentError,
    AgentSettings,
    ApiClient,
    ApiError,
    AuthenticationError,
    ConfigInfo,
    ConfigurationError,
    Heartbeat,
    KeyLocation,
    KeyStore,
    PairedAgent,
    RetryPolicy,
    load_settings,
    redeem_pairing_code,
    save_settings,
)

__all__ = [
    "Pairing",
    "PairingResult",
    "check_key",
    "fetch_assignment",
    "load_settings_or_default",
    "redeem_code",
]

log = logging.getLogger("desktop_agent.gui")


@dataclass(frozen=True, slots=True)
class PairingResult:
    server_url: str
    configs: tuple[ConfigInfo, ...]
    location: KeyLocation
    poll_interval: int | None
    agent_name: str | None = None


def _account(server_url: str) -> str:
    return server_url.rstrip("/")


def load_settings_or_default() -> AgentSettings:
    """The saved settings; the defaults (not paired) when they cannot be read."""
    try:
        return load_settings()
    except ConfigurationError as exc:
        log.warning("ignoring unreadable settings: %s", exc)
        return AgentSettings()


def fetch_assignment(
    server_url: str, api_key: str, timezone: str | None = None
) -> tuple[Heartbeat, list[ConfigInfo]]:
    """A heartbeat (with the zone the schedules run in, when given) and the assigned configs.
    Blocking: run it off the GUI thread."""
    with ApiClient(server_url, api_key, retry=RetryPolicy(max_attempts=2), mode="tray") as client:
        beat = client.heartbeat(version=__version__, platform=sys.platform, timezone=timezone)
        return beat, client.list_configs()


def check_key(server_url: str, api_key: str) -> tuple[Heartbeat, list[ConfigInfo]]:
    """``fetch_assignment`` for a key not saved yet: a refusal says what to do about it."""
    try:
        return fetch_assignment(server_url, api_key)
    except AuthenticationError as exc:
        raise AgentError(
            "the server refused this API key. Check that you pasted all of it, or "
            "create a new key for this agent in the web console."
        ) from exc


def redeem_code(server_url: str, code: str) -> tuple[PairedAgent, Heartbeat, list[ConfigInfo]]:
    """Trade a pairing code for this machine's agent and key, then fetch what is assigned to it.
    A refusal (unknown, used or expired code, too many wrong ones) says why in the server's words.
    Blocking: run it off the GUI thread."""
    try:
        paired = redeem_pairing_code(server_url, code, platform=sys.platform, version=__version__)
    except ApiError as exc:
        if exc.status == 404 and "pairing code" not in exc.detail:
            raise AgentError(
                f"{server_url} does not know pairing codes: is it a BackApp server, and up to date?"
            ) from exc
        detail = exc.detail.removeprefix("code: ")
        raise AgentError(detail[:1].upper() + detail[1:]) from exc
    beat, configs = fetch_assignment(server_url, paired.api_key)
    return paired, beat, configs


class Pairing:
    """The settings and the API key. The key is read from the keychain once per pairing and kept in
    memory: a keychain read per poll or per progress event would mean a keychain prompt every time
    on some systems."""

    def __init__(self, keystore: KeyStore, settings: AgentSettings) -> None:
        self.keystore = keystore
        self.settings = settings
        self._key_cache: tuple[str, str, KeyLocation] | None = None

    @property
    def paired(self) -> bool:
        return bool(self.settings.server_url) and self.key() is not None

    def key(self) -> str | None:
        """The API key of the current server, or ``None`` (not paired, or not in the keychain)."""
        if not self.settings.server_url:
            return None
        if self._key_cache is None or self._key_cache[0] != self.settings.server_url:
            found = self.keystore.load(_account(self.settings.server_url))
            if found is None:
                return None
            self._key_cache = (self.settings.server_url, found[0], found[1])
        return self._key_cache[1]

    def key_location(self) -> KeyLocation | None:
        """Where the key is kept (never the key)."""
        return self._key_cache[2] if self.key() is not None and self._key_cache else None

    def candidate(self, server_url: str, agent_id: str | None = None) -> AgentSettings:
        """The settings a pairing with ``server_url`` would save; ``ConfigurationError`` when the
        address is not one."""
        candidate = replace(self.settings, server_url=server_url).validated()
        if agent_id:
            candidate = replace(candidate, agent_id=agent_id.strip())
        return candidate

    def save(self, settings: AgentSettings, key: str) -> KeyLocation:
        """Keep ``settings`` (on disk) and ``key`` (keychain); a key of another server is
        deleted."""
        old = self.settings.server_url
        save_settings(settings)
        if old and _account(old) != _account(settings.server_url or ""):
            self.keystore.delete(_account(old))
        location = self.keystore.save(_account(settings.server_url or ""), key)
        self.settings = settings
        self._key_cache = (settings.server_url or "", key, location)
        return location

    def forget(self) -> None:
        """Sign out: delete the key (keychain and file) and forget the server and agent id."""
        if self.settings.server_url:
            self.keystore.delete(_account(self.settings.server_url))
        self._key_cache = None
        self.settings = replace(self.settings, server_url=None, agent_id=None)
        save_settings(self.settings)
