"""``RepoCompaction``: ``backapp-agent compact`` and the daemon's compaction when the server asks
(``CompactDuty``), around ``Compactor`` (see ``compact``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .._closing import Closing
from .._errors import AgentError
from .._settings import AgentSettings
from .access import Snapshots
from .compact import Compactor, CompactPlane, CompactResult, Say
from .proofs import RepoProofs

log = logging.getLogger("desktop_agent.engine.repo")

RETRY_AFTER = 3600.0
"""Seconds before the daemon tries again a compaction that failed."""


class RepoCompaction(Closing):
    """Compactions of this agent's repository, opened with this machine's key."""

    def __init__(self, snapshots: Snapshots, *, threshold: float) -> None:
        self.snapshots = snapshots
        self.threshold = threshold

    @classmethod
    def from_settings(cls, settings: AgentSettings, api_key: str) -> RepoCompaction:
        return cls(Snapshots.from_settings(settings, api_key), threshold=settings.compact_threshold)

    def close(self) -> None:
        self.snapshots.close()

    def compact(
        self,
        *,
        config_id: str | None = None,
        threshold: float | None = None,
        say: Say | None = None,
    ) -> CompactResult:
        """Rewrite the packs with at least ``threshold`` percent unused bytes (only those the
        snapshots of ``config_id`` use, when given; every live snapshot is read either way, so
        that no blob another config needs is left out). ``ConfigurationError`` for a config that
        is not this agent's snapshot config."""
        if config_id is not None:
            RepoProofs(self.snapshots).configs(config_id)
        repo = self.snapshots.repository()
        return Compactor(
            repo,
            CompactPlane(self.snapshots.client),
            threshold=self.threshold if threshold is None else threshold,
            config_id=config_id,
            say=say,
        ).run()


class CompactDuty:
    """The daemon's compactions: asked for by the server (the heartbeat's ``compact``), run when
    no backup, restore or drill is waiting; one that failed is tried again an hour later."""

    def __init__(
        self,
        settings: AgentSettings,
        api_key: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.api_key = api_key
        self._mono = monotonic
        self.asked = False
        self._failed_at: float | None = None

    def ask(self) -> None:
        self.asked = True

    def due(self) -> bool:
        if not self.asked:
            return False
        return self._failed_at is None or self._mono() - self._failed_at >= RETRY_AFTER

    def run(self) -> CompactResult | None:
        try:
            with RepoCompaction.from_settings(self.settings, self.api_key) as job:
                result = job.compact(say=lambda text: log.info("compaction: %s", text))
        except AgentError as exc:
            self._failed_at = self._mono()
            log.warning("the compaction the server asked for failed: %s", exc)
            return None
        self.asked = False
        self._failed_at = None
        log.info(
            "compaction %s: %d pack(s) rewritten into %d, %d bytes to be freed",
            result.status,
            result.packs_rewritten,
            result.packs_written,
            result.bytes_saved,
        )
        return result
