"""``RepoProofs``: the agent's evidence that its snapshots are sound, for the command line and the
daemon — ``check`` (structure, and a share of the data read back) and ``drill`` (a sample of
files restored and verified) of each config's newest snapshot, reported to the server
(``POST /api/agent/repo/check``, ``POST /api/agent/drill``). ``DrillSchedule`` says when a
config's drill (``options.drill``) is due.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .._closing import Closing
from .._errors import AgentError, ConfigurationError
from .._settings import AgentSettings, default_temp_dir
from ..protocol import ConfigInfo
from .access import Snapshots
from .drill import DrillResult, remove_stale, run_drill
from .verify import ConfigCheck, ReadProgress, RepoChecker, Target

log = logging.getLogger("desktop_agent.engine.repo")

DRILL_PERIODS = {
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=31),
}
DEFAULT_SAMPLE = 20
RETRY_AFTER = timedelta(hours=1)
"""A drill that could not run (no snapshot yet, the server out of reach) is tried again then."""


@dataclass(slots=True)
class CheckOutcome:
    results: list[ConfigCheck]
    skipped: list[tuple[str, str]]
    """(config name, why) for configs not checked (no snapshot yet)."""
    reported: bool
    report_error: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def drill_options(config: ConfigInfo) -> tuple[str, int] | None:
    """A config's ``options.drill`` as (every, sample), or None (none, or not a snapshot
    config)."""
    drill = config.options.drill
    if config.options.type != "incremental" or not isinstance(drill, dict):
        return None
    every = drill.get("every")
    sample = drill.get("sample", DEFAULT_SAMPLE)
    if every not in DRILL_PERIODS or not isinstance(sample, int) or sample < 1:
        return None
    return str(every), sample


class RepoProofs(Closing):
    """Checks and drills of this agent's snapshots. ``snapshots`` opens the repository with this
    machine's key; its client reports the results."""

    def __init__(
        self, snapshots: Snapshots, *, temp_dir: Path | None = None, workers: int = 4
    ) -> None:
        self.snapshots = snapshots
        self.client = snapshots.client
        self.temp_dir = temp_dir or default_temp_dir()
        self.workers = workers

    @classmethod
    def from_settings(cls, settings: AgentSettings, api_key: str) -> RepoProofs:
        return cls(Snapshots.from_settings(settings, api_key), temp_dir=settings.effective_temp_dir)

    def close(self) -> None:
        self.snapshots.close()

    # --- what to look at -----------------------------------------------------------------------

    def configs(self, config_id: str | None = None) -> list[ConfigInfo]:
        """This agent's snapshot configs (just ``config_id`` when given; ``ConfigurationError``
        when it is not one of them)."""
        found: list[ConfigInfo] = self.client.list_configs()
        if config_id is None:
            return [c for c in found if c.options.type == "incremental"]
        chosen = [c for c in found if c.id == config_id]
        if not chosen:
            raise ConfigurationError(f"no configuration {config_id} is assigned to this agent")
        if chosen[0].options.type != "incremental":
            raise ConfigurationError(
                f"{chosen[0].name or config_id} makes full archives: checks and drills are for "
                'snapshots (options.type "incremental"); a full archive is verified by its '
                "SHA-256 at every restore"
            )
        return chosen

    def _newest(self, config: ConfigInfo) -> str | None:
        found = self.snapshots.list(config_id=config.id, limit=1)
        return found[0].id if found else None

    # --- check ---------------------------------------------------------------------------------

    def check(
        self,
        *,
        config_id: str | None = None,
        read_percent: float = 0.0,
        progress: ReadProgress | None = None,
        report: bool = True,
    ) -> CheckOutcome:
        """Check the newest snapshot of each config (see ``verify``); report to the server."""
        started = time.monotonic()
        targets: list[Target] = []
        skipped: list[tuple[str, str]] = []
        for config in self.configs(config_id):
            newest = self._newest(config)
            if newest is None:
                skipped.append((config.name or config.id, "no snapshot yet"))
            else:
                targets.append(Target(config.id, config.name, newest))
        results: list[ConfigCheck] = []
        if targets:
            checker = RepoChecker(
                self.snapshots.repository(), workers=self.workers, progress=progress
            )
            results = checker.run(targets, read_percent)
        outcome = CheckOutcome(results, skipped, reported=False)
        if report and results:
            try:
                self.client.report_check(
                    {
                        "readData": read_percent,
                        "duration": int((time.monotonic() - started) * 1000),
                        "results": [r.to_json() for r in results],
                    }
                )
                outcome.reported = True
            except AgentError as exc:
                outcome.report_error = str(exc)
                log.warning("could not report the check to the server: %s", exc)
        return outcome

    # --- drill ---------------------------------------------------------------------------------

    def drill(
        self, config_id: str, *, sample: int | None = None, report: bool = True
    ) -> DrillResult | None:
        """One drill of the config's newest snapshot (None when it has none yet), reported to
        the server. ``sample`` defaults to the config's ``options.drill.sample`` (else 20)."""
        [config] = self.configs(config_id)
        newest = self._newest(config)
        if newest is None:
            return None
        size = sample or (drill_options(config) or ("", DEFAULT_SAMPLE))[1]
        remove_stale(self.temp_dir)
        result = run_drill(
            self.snapshots.repository(),
            config_id=config.id,
            config_name=config.name,
            backup_id=newest,
            sample=size,
            temp_root=self.temp_dir,
            workers=self.workers,
        )
        if report:
            self.client.report_drill(result.to_json())
        return result


class DrillSchedule:
    """When each config's restore drill is due: ``options.drill.every`` after the last one this
    agent ran (kept in ``drills.json`` in ``folder``), at once for a config never drilled."""

    def __init__(
        self, folder: Path, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.path = folder / "drills.json"
        self._now = now
        self._next: dict[str, datetime] = {}
        try:
            raw: Any = json.loads(self.path.read_text(encoding="utf-8"))
            for key, value in (raw or {}).items():
                self._next[str(key)] = datetime.fromisoformat(str(value["next"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass

    def due(self, configs: Iterable[ConfigInfo]) -> ConfigInfo | None:
        """The first config whose drill is due now, or None."""
        now = self._now()
        for config in configs:
            if drill_options(config) is None:
                continue
            when = self._next.get(config.id)
            if when is None or when <= now:
                return config
        return None

    def done(self, config: ConfigInfo, *, ran: bool) -> None:
        """A drill of ``config`` ended: the next is one period later (``ran``), or in an hour
        (it could not run)."""
        options = drill_options(config)
        period = DRILL_PERIODS[options[0]] if options and ran else RETRY_AFTER
        self._next[config.id] = self._now() + period
        data = {k: {"next": v.isoformat()} for k, v in self._next.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_suffix(".tmp")
            temp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as exc:
            log.warning("could not save %s: %s", self.path, exc)


class DrillDuty:
    """The daemon's drills: which is due (``DrillSchedule``), and running one (``RepoProofs``)
    when no backup is waiting."""

    def __init__(self, settings: AgentSettings, api_key: str, folder: Path) -> None:
        self.settings = settings
        self.api_key = api_key
        self.schedule = DrillSchedule(folder)

    def due(self, configs: Iterable[ConfigInfo]) -> ConfigInfo | None:
        return self.schedule.due(configs)

    def run(self, config: ConfigInfo) -> DrillResult | None:
        ran = False
        try:
            with RepoProofs.from_settings(self.settings, self.api_key) as proofs:
                result = proofs.drill(config.id)
            ran = result is not None
            if result is None:
                log.info("%s: no snapshot to drill yet", config.name or config.id)
            elif result.ok:
                log.info("%s: restore drill passed (%d files verified)", config.name, result.files)
            else:
                log.warning("%s: restore drill failed: %s", config.name, result.error)
            return result
        except AgentError as exc:
            log.warning("%s: the restore drill could not run: %s", config.name or config.id, exc)
            return None
        finally:
            self.schedule.done(config, ran=ran)
