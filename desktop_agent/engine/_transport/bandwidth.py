"""The agent's bandwidth: one upload and one download bucket for the whole process, and what sets
their rates.

Limits come from three places, and the lowest wins in each direction (``bandwidth.lowest``):

- the machine's own setting (``limitUpload`` / ``limitDownload``: config.json, the environment,
  ``backapp-agent configure``): the user at the machine can always keep it lower than the server;
- the agent's limits from the web console, which every heartbeat brings (``limits``);
- a config's own ``options.limits``, which replace the agent's while that config backs up (the
  heartbeat's ``configLimits`` brings changes to them during a run). With several configs running
  at once, the lowest of theirs holds: there is one bucket.

A schedule or a pause rule is re-evaluated every ``interval`` seconds (30 by default) on a thread
of its own, and at every heartbeat, so a change takes effect within a minute without restarting a
backup: the next slice of every transfer sees the new rate. A pause holds the next request to
storage of a running backup (a part, a pack); the request already sending finishes at the current
rate. Only backups pause: a restore someone asked for is never held, though its download limit
applies.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from ..bandwidth import BandwidthLimits, LimitsError, Rates, lowest, mbps_text
from ..protocol import ConfigInfo, Heartbeat
from .power import PowerProbe, system_probe
from .throttle import MBIT, Throttle

__all__ = [
    "BandwidthControl",
    "agent_bandwidth",
    "apply_limits",
    "config_limits",
    "reset_agent_bandwidth",
]

if TYPE_CHECKING:
    from .._settings import AgentSettings

log = logging.getLogger("desktop_agent.engine")

REFRESH_SECONDS = 30.0


def _local_now() -> datetime:
    return datetime.now().astimezone()


class BandwidthControl:
    """The process's two throttles and the rules that set them (see the module docstring).
    Thread-safe; ``probe``, ``now`` and ``interval`` are injectable for tests."""

    def __init__(
        self,
        *,
        probe: PowerProbe | None = None,
        now: Callable[[], datetime] = _local_now,
        interval: float = REFRESH_SECONDS,
    ) -> None:
        self.upload = Throttle(None)
        self.download = Throttle(None)
        self._probe = probe
        self._now = now
        self._interval = interval
        self._lock = threading.RLock()
        self._local = Rates()
        self._agent: BandwidthLimits | None = None
        self._configs: dict[str, BandwidthLimits | None] = {}
        self._running: dict[int, tuple[str, Callable[[], bool]]] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._state: tuple[Rates, str | None] = (Rates(), None)

    # -- what sets the limits ---------------------------------------------------------------

    def set_local(self, upload: float | None, download: float | None) -> None:
        """The machine's own setting (Mbit/s, ``None``: none)."""
        with self._lock:
            self._local = Rates(upload, download)
        self.refresh()

    def set_server(
        self,
        agent: BandwidthLimits | None,
        configs: Mapping[str, BandwidthLimits | None] | None = None,
    ) -> None:
        """What the server's heartbeat says: the agent's limits and the configs' own (``None``:
        the server sent none, the configs' stay as they were)."""
        with self._lock:
            self._agent = agent
            if configs is not None:
                self._configs = dict(configs)
        self.refresh()

    @contextmanager
    def running(
        self, config_id: str, override: BandwidthLimits | None, cancelled: Callable[[], bool]
    ) -> Iterator[None]:
        """While a backup of ``config_id`` runs: its own limits (``override``, from the config
        it was started with) hold, and ``cancelled`` lets its waits at a pause go."""
        key = next(self._ids)
        with self._lock:
            self._configs[config_id] = override
            self._running[key] = (config_id, cancelled)
        self.refresh()
        try:
            yield
        finally:
            with self._lock:
                del self._running[key]
            self.refresh()

    # -- the rules ----------------------------------------------------------------------------

    def _policies(self) -> list[BandwidthLimits]:
        if not self._running:
            return [self._agent] if self._agent is not None else []
        found: list[BandwidthLimits] = []
        for config_id, _ in self._running.values():
            policy = self._configs.get(config_id) or self._agent
            if policy is not None:
                found.append(policy)
        return found

    def _pause_reason(self, policies: list[BandwidthLimits]) -> str | None:
        if not self._running:
            return None  # only backups pause
        probe = self._probe if self._probe is not None else system_probe()
        self._probe = probe
        if any(p.pause_on_metered for p in policies) and probe.metered():
            return "on a metered connection"
        if any(p.pause_on_battery for p in policies) and probe.on_battery():
            return "on battery power"
        return None

    def refresh(self) -> None:
        """Re-evaluate schedules and pause rules now and apply the result to both throttles."""
        with self._lock:
            policies = self._policies()
            now = self._now()
            rates = lowest(self._local, *(p.rates(now) for p in policies))
            paused = self._pause_reason(policies)
            for throttle, mbps in ((self.upload, rates.upload), (self.download, rates.download)):
                throttle.set_rate(None if mbps is None else mbps * MBIT)
            if paused is not None:
                self.upload.pause(paused)
            else:
                self.upload.resume()
            if (rates, paused) != self._state:
                self._state = (rates, paused)
                log.info("bandwidth: %s", self.describe() or "no limit")
            if any(p.schedule or p.pause_on_metered or p.pause_on_battery for p in policies):
                self._start_ticker()

    def _start_ticker(self) -> None:
        if self._ticker is not None and self._ticker.is_alive():
            return

        def tick() -> None:
            while not self._stop.wait(self._interval):
                try:
                    self.refresh()
                except Exception:  # a probe's bug must not stop the limits
                    log.exception("could not re-evaluate the bandwidth limits")

        self._ticker = threading.Thread(target=tick, name="backapp-bandwidth", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()

    # -- what it says ---------------------------------------------------------------------------

    def released(self) -> bool:
        """Whether a wait at a pause should end now: no backup runs, or one was cancelled."""
        with self._lock:
            running = list(self._running.values())
        return not running or any(cancelled() for _, cancelled in running)

    def upload_text(self) -> str | None:
        """For a backup's progress: ``limited to 10 Mbit/s``, ``paused: on battery power``, or
        ``None`` (no limit)."""
        if self.upload.paused is not None:
            return f"paused: {self.upload.paused}"
        mbps = self.upload.mbps
        return None if mbps is None else f"limited to {mbps_text(round(mbps, 3))}"

    def describe(self) -> str | None:
        parts = []
        if self.upload.paused is not None:
            parts.append(f"backups paused ({self.upload.paused})")
        for name, throttle in (("upload", self.upload), ("download", self.download)):
            mbps = throttle.mbps
            if mbps is not None:
                parts.append(f"{name} limited to {mbps_text(round(mbps, 3))}")
        return ", ".join(parts) or None


_agent: BandwidthControl | None = None
_agent_lock = threading.Lock()


def agent_bandwidth(settings: AgentSettings | None = None) -> BandwidthControl:
    """This process's control: every storage client of the agent shares its buckets. With
    ``settings``, the machine's own limits (``limitUpload`` / ``limitDownload``) are taken in."""
    global _agent
    with _agent_lock:
        if _agent is None:
            _agent = BandwidthControl()
        control = _agent
    if settings is not None:
        control.set_local(settings.limit_upload, settings.limit_download)
    return control


def reset_agent_bandwidth(control: BandwidthControl | None = None) -> None:
    """Replace the process's control (tests; ``None``: a fresh one on next use)."""
    global _agent
    with _agent_lock:
        if _agent is not None:
            _agent.close()
        _agent = control


def apply_limits(beat: Heartbeat, control: BandwidthControl | None = None) -> None:
    """Take the limits a heartbeat answer brings (``limits``, ``configLimits``) into ``control``
    (the process's). Limits this agent cannot read are logged and leave the current ones."""
    try:
        agent = BandwidthLimits.parse(beat.limits)
        configs = (
            None
            if beat.config_limits is None
            else {
                config_id: BandwidthLimits.parse(raw, f"configLimits.{config_id}")
                for config_id, raw in beat.config_limits.items()
            }
        )
    except LimitsError as exc:
        log.warning("the server sent bandwidth limits this agent cannot read: %s", exc)
        return
    (control or agent_bandwidth()).set_server(agent, configs)


def config_limits(config: ConfigInfo) -> BandwidthLimits | None:
    """A config's own ``options.limits`` (``None``: the agent's; unreadable ones are logged)."""
    try:
        return BandwidthLimits.parse(config.options.limits, "options.limits")
    except LimitsError as exc:
        log.warning("config %s: bandwidth limits this agent cannot read: %s", config.id, exc)
        return None
