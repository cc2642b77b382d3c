"""How much work one periodic round may do before it leaves the rest to the next round.

A round over a backlog (the first retention round after an upgrade, every config new to the alert
round, thousands of archives to delete) would otherwise run for minutes against an interval of a
minute. Instead each round works in batches read by keyset and stops once it has used its time
(``BACKAPP_ROUND_BUDGET_SECONDS``) or its rows; what it did not reach is still due (its
``*_due_at`` is unset or past), so the next round continues there and a backlog drains over
several rounds, none much longer than the budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from piccolo.columns import Column, Timestamptz

from backend.backups.tables import BackupConfig

__all__ = ["Cursor", "RoundBudget", "due_configs"]

Cursor = tuple[Any, ...]
"""Where a round's keyset walk over due configs stands (see :func:`due_configs`)."""


class RoundBudget:
    """The time and the rows a round may still use; ``seconds`` 0 means no time limit."""

    def __init__(self, seconds: float, rows: int) -> None:
        self.seconds = seconds
        self.rows = rows
        self.used = 0
        self._started = time.monotonic()

    def take(self, rows: int) -> None:
        """Count ``rows`` as done."""
        self.used += rows

    @property
    def left(self) -> int:
        """Rows the round may still read (at least 0)."""
        return max(0, self.rows - self.used)

    @property
    def out_of_time(self) -> bool:
        """True once the round has used its time (never when ``seconds`` is 0)."""
        return self.seconds > 0 and time.monotonic() - self._started >= self.seconds

    @property
    def spent(self) -> bool:
        """True once the round has used its rows or its time: it stops at the next batch."""
        return self.used >= self.rows or self.out_of_time


async def due_configs(
    due: Timestamptz,
    columns: Sequence[Column],
    now: datetime,
    cursor: Cursor | None,
    limit: int,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """The next ``limit`` configs due by the column ``due`` after ``cursor`` (None: from the
    start), and the cursor after them (None when there are no more): first those not evaluated
    since they changed (``due`` null, by id), then those whose moment came (by ``due``, id).
    Both ranges are read over ``due``'s index; ``columns`` are those the round needs."""
    if limit <= 0:
        return [], cursor
    rows: list[dict[str, Any]] = []
    if cursor is None or cursor[0] == "new":
        where = due.is_null()
        if cursor is not None:
            where = where & (BackupConfig.id > cursor[1])
        rows = await (
            BackupConfig.select(*columns, BackupConfig.id.as_alias("_key"))
            .where(where)
            .order_by(BackupConfig.id)
            .limit(limit)
        )
        if len(rows) == limit:
            return rows, ("new", rows[-1]["_key"])
        cursor, limit = ("due",), limit - len(rows)
    where = due <= now
    if len(cursor) == 3:
        at, last = cursor[1], cursor[2]
        where = where & ((due > at) | ((due == at) & (BackupConfig.id > last)))
    more = await (
        BackupConfig.select(*columns, BackupConfig.id.as_alias("_key"), due.as_alias("_due"))
        .where(where)
        .order_by(due, BackupConfig.id)
        .limit(limit)
    )
    rows += more
    if len(more) == limit:
        return rows, ("due", more[-1]["_due"], more[-1]["_key"])
    return rows, None
