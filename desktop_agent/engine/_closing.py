"""One way for the engine's objects that hold connections to be context managers.

``with X(...) as x:`` closes ``x`` at the end; each class says in ``close`` what it releases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self


class _Closable(Protocol):
    def close(self) -> None: ...


class Closing:
    """A base for objects that hold connections or files: ``with`` closes them."""

    def close(self) -> None:
        """Release what this object holds (nothing here; subclasses say what)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OwnsClients(Closing):
    """Closes the clients it opened itself (``from_settings``); clients handed in stay open,
    since their caller closes them."""

    _owned: Sequence[_Closable] = ()
    """What ``from_settings`` opened; set there, so an object built around given clients has none."""

    def owning(self, *clients: _Closable) -> Self:
        """This object, which now closes ``clients`` (those ``from_settings`` opened for it)."""
        self._owned = clients
        return self

    def close(self) -> None:
        for client in self._owned:
            client.close()
