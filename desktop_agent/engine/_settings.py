"""The agent's settings: ``config.json`` in the platform's config directory, overridden by environment
variables, read once per process through ``load_settings()``.

``config.json`` holds the spec's fields minus the API key (which lives in the keychain, see
``_keystore``): ``serverUrl``, ``agentId``, ``pollInterval`` (milliseconds, as in the spec) and
``tempDir``, plus optional tuning keys. Keys this version does not know are kept when the file is saved.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from ._errors import ConfigurationError

__all__ = [
    "APP_NAME",
    "MIB",
    "AgentSettings",
    "config_dir",
    "instances_dir",
    "load_settings",
    "parse_size",
    "save_settings",
]

APP_NAME = "backapp-agent"
MIB = 1024 * 1024
CONFIG_FILE = "config.json"
S3_MIN_PART = 5 * MIB

ENV_CONFIG_DIR = "BACKAPP_AGENT_CONFIG_DIR"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The agent's config directory: ``$BACKAPP_AGENT_CONFIG_DIR`` or the platform's user config dir
    (``~/.config/backapp-agent`` on Linux, ``~/Library/Application Support/backapp-agent`` on macOS,
    ``%LOCALAPPDATA%\\backapp-agent`` on Windows)."""
    env = os.environ if env is None else env
    override = env.get(ENV_CONFIG_DIR)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def instances_dir(directory: Path | None = None) -> Path:
    """Where the agent's processes register, so that a restarted one can take over the run leases
    a dead one left (``instances`` in the config directory, or in ``directory``)."""
    return (directory if directory is not None else config_dir()) / "instances"


def default_temp_dir() -> Path:
    return Path(tempfile.gettempdir()) / APP_NAME


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The agent's cache folder: ``$BACKAPP_CACHE_DIR``, else the platform's user cache folder."""
    env = os.environ if env is None else env
    if env.get("BACKAPP_CACHE_DIR"):
        return Path(env["BACKAPP_CACHE_DIR"])
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``"16MiB"``, ``"16M"``, ``"5 GiB"``, ``"1048576"`` (units are binary: K = 1024).

    >>> parse_size("16MiB"), parse_size("5m"), parse_size(512)
    (16777216, 5242880, 512)
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 16MiB, 5M, 1048576)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** "_kmgt".index(unit)) if unit else int(number)


#: The most configs one agent backs up at the same time (``parallelBackups``).
MAX_PARALLEL_BACKUPS = 4


def _whole_number(value: object) -> int:
    """An int from JSON or the environment; ``2.5``, ``true`` or ``"two"`` are refused (``int()``
    would quietly turn the first two into 2 and 1)."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError("not a whole number")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError("not a whole number")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Everything the agent reads from ``config.json`` and the environment (never the API key)."""

    server_url: str | None = None
    """Base URL of the BackApp server (``serverUrl``; ``$BACKAPP_AGENT_SERVER_URL``)."""
    agent_id: str | None = None
    """This agent's id, for display (``agentId``)."""
    poll_interval_ms: int = 30_000
    """Milliseconds between polls/heartbeats, as in the spec (``pollInterval``)."""
    temp_dir: Path | None = None
    """Scratch space for the scan list (``tempDir``; ``$BACKAPP_AGENT_TEMP_DIR``). Small: the archive
    itself never touches the disk."""
    part_size: int | None = None
    """Multipart part size in bytes (``partSize``; ``$BACKAPP_AGENT_PART_SIZE``); default: what the
    server suggests, else 16 MiB. At least 5 MiB (S3's minimum)."""
    multipart_threshold: int = 16 * MIB
    """Archives larger than this go up in parts (``multipartThreshold``;
    ``$BACKAPP_AGENT_MULTIPART_THRESHOLD``); smaller ones in a single PUT, buffered in memory."""
    upload_concurrency: int = 2
    """Parts uploaded at the same time (``uploadConcurrency``; ``$BACKAPP_AGENT_UPLOAD_CONCURRENCY``)."""
    gzip_level: int = 6
    """gzip level 1-9 (``gzipLevel``; ``$BACKAPP_AGENT_GZIP_LEVEL``)."""
    zstd_level: int = 1
    """zstd level 1-19 (``zstdLevel``; ``$BACKAPP_AGENT_ZSTD_LEVEL``)."""
    compress_threads: int | None = None
    """Compression threads (``compressThreads``; ``$BACKAPP_AGENT_COMPRESS_THREADS``); default: all
    cores."""
    exclude_node_modules: bool = False
    """Skip every ``node_modules`` folder in every config (``excludeNodeModules``)."""
    lease_ttl: int = 300
    """Seconds a run lease lasts without renewal (``leaseTtl``; ``$BACKAPP_AGENT_LEASE_TTL``,
    30-3600): how soon the server calls a run whose agent died ``interrupted``. Renewed every third
    of it while the backup runs."""
    storage_stall_timeout: float = 60.0
    """Seconds without a byte moving to or from storage before that request is abandoned and tried
    again (``storageStallTimeout``; ``$BACKAPP_AGENT_STORAGE_STALL_TIMEOUT``)."""
    storage_retry_budget: float = 600.0
    """Seconds an upload keeps retrying a part (or a single upload) through storage or network
    errors, with backoff, before the backup fails (``storageRetryBudget``;
    ``$BACKAPP_AGENT_STORAGE_RETRY_BUDGET``)."""

    limit_upload: float | None = None
    """Upload limit in Mbit/s for all of this agent's transfers to storage together
    (``limitUpload``; ``$BACKAPP_AGENT_LIMIT_UPLOAD``); none by default."""
    limit_download: float | None = None
    """Download (restore) limit in Mbit/s (``limitDownload``; ``$BACKAPP_AGENT_LIMIT_DOWNLOAD``);
    none by default."""
    compact_threshold: float = 20.0
    """Compaction rewrites a pack once at least this share (percent, 1-100) of its bytes is
    unused by the live snapshots (``compactThreshold``; ``$BACKAPP_AGENT_COMPACT_THRESHOLD``)."""
    allow_server_commands: bool = False
    """Run the ``preCommand`` / ``postCommand`` a config sets on the server
    (``allowServerCommands``; ``$BACKAPP_AGENT_ALLOW_SERVER_COMMANDS``). Off by default: a command
    set on the server runs on this machine, so whoever holds the owner's account could run
    anything here; only the machine's own user can turn it on."""
    parallel_backups: int = 1
    """How many different configs the daemon and the tray back up at the same time
    (``parallelBackups``; ``$BACKAPP_AGENT_PARALLEL_BACKUPS``; 1-4, default 1). One config never
    runs twice at once (its run lease)."""

    auto_update: bool = True
    """Install the agent builds the server offers at an idle moment (``autoUpdate``;
    ``$BACKAPP_AGENT_AUTO_UPDATE``; single-file builds only). Off, an offer is only logged and
    ``backapp-agent update`` installs it."""

    @property
    def effective_temp_dir(self) -> Path:
        return self.temp_dir if self.temp_dir is not None else default_temp_dir()

    @property
    def effective_cache_dir(self) -> Path:
        return default_cache_dir()

    def validated(self) -> AgentSettings:
        """``self``, or a ``ConfigurationError`` that names the bad setting."""
        if self.server_url is not None and not re.match(r"^https?://[^/\s]+", self.server_url):
            raise ConfigurationError(f"serverUrl must be an http(s) URL, not {self.server_url!r}")
        if self.part_size is not None and self.part_size < S3_MIN_PART:
            raise ConfigurationError("partSize must be at least 5 MiB (S3's minimum part size)")
        if self.multipart_threshold < 0:
            raise ConfigurationError("multipartThreshold must not be negative")
        if not 1 <= self.upload_concurrency <= 32:
            raise ConfigurationError("uploadConcurrency must be between 1 and 32")
        if not 1 <= self.gzip_level <= 9:
            raise ConfigurationError("gzipLevel must be between 1 and 9")
        if not 1 <= self.zstd_level <= 19:
            raise ConfigurationError("zstdLevel must be between 1 and 19")
        if self.compress_threads is not None and not 1 <= self.compress_threads <= 256:
            raise ConfigurationError("compressThreads must be between 1 and 256")
        if self.poll_interval_ms < 1000:
            raise ConfigurationError("pollInterval must be at least 1000 ms")
        if not 30 <= self.lease_ttl <= 3600:
            raise ConfigurationError("leaseTtl must be between 30 and 3600 seconds")
        if not 0.1 <= self.storage_stall_timeout <= 3600:
            raise ConfigurationError("storageStallTimeout must be between 0.1 and 3600 seconds")
        if not 0 <= self.storage_retry_budget <= 86400:
            raise ConfigurationError("storageRetryBudget must be between 0 and 86400 seconds")
        if not 1 <= self.compact_threshold <= 100:
            raise ConfigurationError("compactThreshold must be between 1 and 100 (percent)")
        if not 1 <= self.parallel_backups <= MAX_PARALLEL_BACKUPS:
            raise ConfigurationError(
                f"parallelBackups must be between 1 and {MAX_PARALLEL_BACKUPS}, "
                f"not {self.parallel_backups}"
            )
        for key, value in (
            ("limitUpload", self.limit_upload),
            ("limitDownload", self.limit_download),
        ):
            if value is not None and not 0.01 <= value <= 100_000:
                raise ConfigurationError(
                    f"{key} must be between 0.01 and 100000 Mbit/s (leave it out for no limit)"
                )
        return self


# config.json key -> (field name, converter)
_FILE_KEYS: dict[str, tuple[str, Any]] = {
    "serverUrl": ("server_url", str),
    "agentId": ("agent_id", str),
    "pollInterval": ("poll_interval_ms", int),
    "tempDir": ("temp_dir", Path),
    "partSize": ("part_size", parse_size),
    "multipartThreshold": ("multipart_threshold", parse_size),
    "uploadConcurrency": ("upload_concurrency", int),
    "gzipLevel": ("gzip_level", int),
    "zstdLevel": ("zstd_level", int),
    "compressThreads": ("compress_threads", int),
    "excludeNodeModules": ("exclude_node_modules", bool),
    "leaseTtl": ("lease_ttl", int),
    "storageStallTimeout": ("storage_stall_timeout", float),
    "storageRetryBudget": ("storage_retry_budget", float),
    "limitUpload": ("limit_upload", float),
    "limitDownload": ("limit_download", float),
    "compactThreshold": ("compact_threshold", float),
    "allowServerCommands": ("allow_server_commands", bool),
    "parallelBackups": ("parallel_backups", _whole_number),
    "autoUpdate": ("auto_update", bool),
}

_ENV_KEYS: dict[str, str] = {
    "BACKAPP_AGENT_SERVER_URL": "serverUrl",
    "BACKAPP_AGENT_TEMP_DIR": "tempDir",
    "BACKAPP_AGENT_PART_SIZE": "partSize",
    "BACKAPP_AGENT_MULTIPART_THRESHOLD": "multipartThreshold",
    "BACKAPP_AGENT_UPLOAD_CONCURRENCY": "uploadConcurrency",
    "BACKAPP_AGENT_GZIP_LEVEL": "gzipLevel",
    "BACKAPP_AGENT_ZSTD_LEVEL": "zstdLevel",
    "BACKAPP_AGENT_COMPRESS_THREADS": "compressThreads",
    "BACKAPP_AGENT_LEASE_TTL": "leaseTtl",
    "BACKAPP_AGENT_STORAGE_STALL_TIMEOUT": "storageStallTimeout",
    "BACKAPP_AGENT_STORAGE_RETRY_BUDGET": "storageRetryBudget",
    "BACKAPP_AGENT_LIMIT_UPLOAD": "limitUpload",
    "BACKAPP_AGENT_LIMIT_DOWNLOAD": "limitDownload",
    "BACKAPP_AGENT_COMPACT_THRESHOLD": "compactThreshold",
    "BACKAPP_AGENT_ALLOW_SERVER_COMMANDS": "allowServerCommands",
    "BACKAPP_AGENT_PARALLEL_BACKUPS": "parallelBackups",
    "BACKAPP_AGENT_AUTO_UPDATE": "autoUpdate",
}


def _read_file(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} must hold a JSON object")
    return data


def _apply(settings: AgentSettings, raw: Mapping[str, Any], origin: str) -> AgentSettings:
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FILE_KEYS or value is None:
            continue
        name, convert = _FILE_KEYS[key]
        try:
            if convert is bool and isinstance(value, str):
                changes[name] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                changes[name] = convert(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{origin}: bad value for {key}: {value!r} ({exc})") from exc
    return replace(settings, **changes)


def load_settings(env: Mapping[str, str] | None = None) -> AgentSettings:
    """Settings from ``config.json`` (if any), then the ``BACKAPP_AGENT_*`` environment variables."""
    env = os.environ if env is None else env
    directory = config_dir(env)
    settings = _apply(AgentSettings(), _read_file(directory), str(directory / CONFIG_FILE))
    from_env = {key: env[var] for var, key in _ENV_KEYS.items() if env.get(var)}
    if env.get("BACKAPP_AGENT_EXCLUDE_NODE_MODULES"):
        from_env["excludeNodeModules"] = env["BACKAPP_AGENT_EXCLUDE_NODE_MODULES"]
    return _apply(settings, from_env, "environment").validated()


def settings_to_json(settings: AgentSettings) -> dict[str, Any]:
    """The ``config.json`` object for ``settings`` (defaults omitted except the spec's own fields)."""
    defaults = AgentSettings()
    out: dict[str, Any] = {}
    for key, (name, _) in _FILE_KEYS.items():
        value = getattr(settings, name)
        if key in ("serverUrl", "agentId", "pollInterval", "tempDir"):
            if key == "tempDir" and value is None:
                value = settings.effective_temp_dir
        elif value == getattr(defaults, name):
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def save_settings(settings: AgentSettings, env: Mapping[str, str] | None = None) -> Path:
    """Write ``config.json`` atomically (mode 0600), keeping keys this version does not know."""
    directory = config_dir(env)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / CONFIG_FILE
    data = {k: v for k, v in _read_file(directory).items() if k not in _FILE_KEYS}
    data.update(settings_to_json(settings))
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def settings_fields() -> list[str]:
    return [f.name for f in fields(AgentSettings)]
