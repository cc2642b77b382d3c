"""When a request is worth trying again, and how long to wait before it."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

__all__ = ["RETRYABLE_EXCEPTIONS", "RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

#: HTTP statuses worth trying again: rate limited, bad gateway, unavailable, gateway timeout.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Transport errors worth trying again (the request may not have reached the server).
RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    The n-th retry (n = 0, 1, ...) waits a random time in ``[base * 2**n / 2, base * 2**n]``, capped at
    ``max_delay``; a ``Retry-After`` header wins when the server sends one (capped at
    ``max_retry_after``).
    """

    max_attempts: int = 5
    """Attempts in all, the first one included."""
    base_delay: float = 0.5
    """Seconds before the first retry (before jitter)."""
    max_delay: float = 30.0
    """Upper bound of one backoff delay, in seconds."""
    max_retry_after: float = 300.0
    """Upper bound of a delay asked for by ``Retry-After``, in seconds."""

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The backoff before retry number ``retry`` (0-based), jittered by ``rand()`` in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * float(2**retry))
        return ceiling / 2 + ceiling / 2 * rand()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
