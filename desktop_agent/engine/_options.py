"""``EngineOptions``: how the engine archives and uploads, taken from the agent's settings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ._settings import AgentSettings, config_dir, default_cache_dir
from ._upload import UploadOptions

__all__ = ["EngineOptions"]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine archives and uploads (the agent settings' tuning part)."""

    temp_dir: Path | None = None
    """Where the scan list may spill to disk (a few bytes per file; never archive data)."""
    upload: UploadOptions = field(default_factory=UploadOptions)
    gzip_level: int = 6
    zstd_level: int = 1
    compress_threads: int | None = None
    """Compression threads; ``None``: one per core."""
    exclude_node_modules: bool = False
    default_excludes: bool = True
    version: str = __version__
    platform: str = sys.platform
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where the snapshot repository's local cache lives (an index of what is stored, and the
    folders of past snapshots; rebuilt from the repository when lost)."""
    allow_server_commands: bool = False
    """Run the configs' ``preCommand`` / ``postCommand`` (the agent's ``allowServerCommands``)."""
    repository_key: Callable[[str], bytes] | None = None
    """This machine's repository key for an agent id (made on first use); ``None``: no
    incremental backups."""

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> EngineOptions:
        from ._repo.keys import RepoKeyStore  # the snapshot repository's key, in the keychain

        store = RepoKeyStore(config_dir())
        server = settings.server_url or ""
        return cls(
            cache_dir=settings.effective_cache_dir,
            repository_key=lambda agent_id: store.load_or_create(f"{server}#{agent_id}"),
            temp_dir=settings.effective_temp_dir,
            upload=UploadOptions(
                multipart_threshold=settings.multipart_threshold,
                part_size=settings.part_size,
                concurrency=settings.upload_concurrency,
                retry_budget=settings.storage_retry_budget,
            ),
            gzip_level=settings.gzip_level,
            zstd_level=settings.zstd_level,
            compress_threads=settings.compress_threads,
            exclude_node_modules=settings.exclude_node_modules,
            allow_server_commands=settings.allow_server_commands,
        )
