"""One run over the agent's configs, the spec's flow shared by ``BackupEngine.run`` and
``Runner.run_manual``:

    run: heartbeat -> fetch configs -> back each up -> final heartbeat

The caller says how one config is backed up (the engine directly; the runner under the config's run
lease, which may skip it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ._cancel import CancelToken
from ._errors import AgentError
from ._events import EventSink, RunFinished, RunStarted
from .protocol import BackupResult, ConfigInfo, ControlPlane, Heartbeat, RunResult

__all__ = ["not_started", "run_configs", "select_configs"]

log = logging.getLogger("desktop_agent.engine")


def select_configs(
    configs: Sequence[ConfigInfo], config_ids: Sequence[str] | None
) -> tuple[list[ConfigInfo], list[BackupResult]]:
    """The configs to run: all, or those named in ``config_ids`` (in that order, once each); an id
    not assigned to this agent gives a failed result instead."""
    if not config_ids:
        return list(configs), []
    by_id = {c.id: c for c in configs}
    selected: list[ConfigInfo] = []
    results: list[BackupResult] = []
    for config_id in dict.fromkeys(config_ids):
        if config_id in by_id:
            selected.append(by_id[config_id])
        else:
            results.append(
                BackupResult(
                    config_id=config_id,
                    status="failed",
                    error="no such config is assigned to this agent",
                )
            )
    return selected, results


def not_started(config: ConfigInfo, error: str, *, cancelled: bool = False) -> BackupResult:
    """The result of a config that the run did not start: ``cancelled`` when the run was cancelled
    before it got there, else failed (no lease)."""
    return BackupResult(
        config_id=config.id,
        config_name=config.name,
        status="cancelled" if cancelled else "failed",
        error=error,
    )


def run_configs(
    plane: ControlPlane,
    back_up: Callable[[ConfigInfo], BackupResult | None],
    *,
    version: str,
    platform: str,
    emit: EventSink,
    config_ids: Sequence[str] | None = None,
    cancel: CancelToken | None = None,
    temp_dir: Path | None = None,
    on_heartbeat: Callable[[Heartbeat], None] | None = None,
) -> RunResult:
    """Heartbeat (``on_heartbeat`` sees the first answer), fetch the configs (all, or those in
    ``config_ids``), back each up with ``back_up``, final heartbeat; then remove ``temp_dir`` if it
    was left empty. ``back_up`` returns the config's result, or ``None`` for a config the caller
    accounts for itself (it then has no result). Never raises for a failed config; a run that cannot
    start (server unreachable, key refused) returns a ``RunResult`` with ``error`` set."""
    try:
        beat = plane.heartbeat(version=version, platform=platform)
        if on_heartbeat is not None:
            on_heartbeat(beat)
        configs = plane.list_configs()
    except AgentError as exc:
        emit(RunFinished(completed=0, failed=0, error=str(exc)))
        return RunResult((), error=str(exc))
    configs, results = select_configs(configs, config_ids)
    emit(RunStarted(configs=len(configs)))
    for config in configs:
        if cancel is not None and cancel.is_set():
            results.append(
                not_started(
                    config, f"{cancel.reason} before it started", cancelled=cancel.deliberate
                )
            )
            continue
        result = back_up(config)
        if result is not None:
            results.append(result)
    try:
        plane.heartbeat(version=version, platform=platform)
    except AgentError as exc:
        log.warning("final heartbeat failed: %s", exc)
    if temp_dir is not None:
        try:
            temp_dir.rmdir()  # only if empty: it may be shared
        except OSError:
            pass
    completed = sum(r.ok for r in results)
    cancelled = sum(r.status == "cancelled" for r in results)
    emit(
        RunFinished(
            completed=completed,
            failed=len(results) - completed - cancelled,
            cancelled=cancelled,
        )
    )
    return RunResult(tuple(results))
