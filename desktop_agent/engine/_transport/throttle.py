"""A bandwidth limit shared by every transfer of a process: one token bucket per direction.

restic's ``--limit-upload`` and Arq's throttle work the same way: each request takes tokens (bytes)
before it sends or after it receives a slice, and waits while the bucket is empty, so the sum over
all parallel uploads (parts, packs) stays at the limit however many run at once. The rate can be
changed while transfers run (``set_rate``): a change applies from the next slice on. A throttle
without a rate lets everything through; a paused one (``pause``) holds new requests at
``wait_ready`` until it is resumed (the agent pauses backups on metered connections or battery).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["MBIT", "SLICE", "Throttle"]

MBIT = 1_000_000 / 8
"""Bytes per second in one Mbit/s (network units: 10^6 bits)."""
SLICE = 64 * 1024
"""Bytes a limited transfer moves between two looks at the bucket."""
_BURST_SECONDS = 0.25
"""The bucket holds at most this much time's worth of tokens (and at least one slice): a
transfer that paused cannot then send a long burst above the limit."""


class Throttle:
    """A token bucket of ``rate`` bytes per second. Thread-safe; ``clock`` and ``sleep`` are
    injectable so tests count the waits instead of waiting."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a bandwidth limit must be more than 0")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._resumed = threading.Condition(self._lock)
        self._rate = None if rate is None else float(rate)
        self._tokens = self._burst()
        self._stamp = clock()
        self._paused: str | None = None

    @classmethod
    def from_mbps(cls, mbps: float | None) -> Throttle | None:
        """A throttle of ``mbps`` Mbit/s, or ``None`` (no limit) for ``None``."""
        return None if mbps is None else cls(mbps * MBIT)

    @property
    def rate(self) -> float | None:
        """Bytes per second; ``None``: no limit."""
        return self._rate

    @property
    def mbps(self) -> float | None:
        return None if self._rate is None else self._rate / MBIT

    def set_rate(self, rate: float | None) -> None:
        """A new rate (``None``: no limit) for every transfer, from its next slice on."""
        if rate is not None and rate <= 0:
            raise ValueError("a bandwidth limit must be more than 0")
        with self._lock:
            self._refill()
            self._rate = None if rate is None else float(rate)
            self._tokens = min(self._tokens, self._burst())

    @property
    def paused(self) -> str | None:
        """Why new requests wait (``on battery power``), or ``None``."""
        return self._paused

    def pause(self, reason: str) -> None:
        """Hold new requests at ``wait_ready`` (those already sending finish at the rate)."""
        with self._lock:
            self._paused = reason

    def resume(self) -> None:
        with self._lock:
            self._paused = None
            self._resumed.notify_all()

    def wait_ready(self, released: Callable[[], bool] | None = None, poll: float = 0.5) -> None:
        """Return once the throttle is not paused, or as soon as ``released()`` says so (a
        cancelled backup must not sit here: it notices its cancel right after)."""
        with self._lock:
            while self._paused is not None:
                if released is not None and released():
                    return
                self._resumed.wait(poll)

    def _burst(self) -> float:
        return max(float(SLICE), (self._rate or 0.0) * _BURST_SECONDS)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._stamp) * self._rate)
        else:
            self._tokens = self._burst()
        self._stamp = now

    def take(self, n: int) -> None:
        """Take ``n`` bytes' worth of tokens, waiting as long as the limit requires. The debt of
        a slice larger than the bucket is paid by waiting after it, so the average holds."""
        with self._lock:
            if self._rate is None:
                return
            self._refill()
            self._tokens -= n
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
