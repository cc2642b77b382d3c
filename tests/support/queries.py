"""Count the SQL statements a piece of code runs, through the real Piccolo engine.

    with count_queries() as log:
        await client.get("/")
    assert len(log) == 7, log.statements
    assert log.rows == 120  # rows the statements returned: O(page), not O(fleet)

Every Piccolo query (select, insert, raw, ...) goes through ``engine.run_querystring``; the counter
wraps that method for the engine the tables are bound to, for the duration of the block.
``count_queries(own_task_only=True)`` leaves out what other asyncio tasks run meanwhile (the
server's background writers), for code the test awaits directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from backend.backups.tables import BackupLog

__all__ = ["QueryLog", "count_queries"]

_counting: ContextVar[object | None] = ContextVar("_counting", default=None)


@dataclass
class QueryLog:
    statements: list[str] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    """Rows each statement returned (0 for one that returns none)."""

    def __len__(self) -> int:
        return len(self.statements)

    @property
    def rows(self) -> int:
        """Rows all the statements returned together."""
        return sum(self.returned)


@contextmanager
def count_queries(*, own_task_only: bool = False) -> Iterator[QueryLog]:
    engine: Any = BackupLog._meta.db
    log = QueryLog()
    mark = _counting.set(log)
    cls = type(engine)
    original = cls.run_querystring

    async def counting(self: Any, querystring: Any, *args: Any, **kwargs: Any) -> Any:
        if self is not engine or (own_task_only and _counting.get() is not log):
            return await original(self, querystring, *args, **kwargs)
        log.statements.append(str(querystring))
        log.returned.append(0)
        result = await original(self, querystring, *args, **kwargs)
        if isinstance(result, list):
            log.returned[-1] = len(result)
        return result

    # Engines have slots: the method is wrapped on the class, counting only this engine.
    cls.run_querystring = counting
    try:
        yield log
    finally:
        cls.run_querystring = original
        _counting.reset(mark)
