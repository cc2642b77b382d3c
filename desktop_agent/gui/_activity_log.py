"""The status window's *Recent activity*: the agent's log lines, keys redacted, handed to a sink as
they are written (from any thread: the sink must queue them to the GUI thread)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._text import KeyRedactor, redact

__all__ = ["LOG_LINES", "ActivityLog"]

#: How many lines the status window keeps.
LOG_LINES = 200

_LOGGERS = ("desktop_agent", "backapp-agent")


class ActivityLog(logging.Handler):
    """A handler on the agent's loggers from ``install()`` to ``remove()``."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.addFilter(KeyRedactor())
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        self._sink = sink
        self._previous_level = logging.NOTSET

    def install(self) -> None:
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self)
        agent_logger = logging.getLogger("desktop_agent")
        self._previous_level = agent_logger.level
        if agent_logger.getEffectiveLevel() > logging.INFO:  # the status window shows INFO lines
            agent_logger.setLevel(logging.INFO)

    def remove(self) -> None:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self)
        logging.getLogger("desktop_agent").setLevel(self._previous_level)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink(redact(self.format(record)))
        except Exception:  # a log line must never break the app
            self.handleError(record)
