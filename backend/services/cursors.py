"""Keyset-pagination cursors: the sort key of the last row of a page, signed.

A list ordered by ``(t DESC, id DESC)`` (or ascending) continues after a row with
``WHERE t < :t OR (t = :t AND id < :id)``: the cost of a page does not grow with its depth, unlike
``OFFSET``, and a row inserted or deleted between two pages neither repeats nor skips another.

The cursor is opaque to clients: ``base64url(JSON [timestamp, id]) "." base64url(MAC)``. The MAC
(HMAC-SHA256 with the server secret, over the list's name, the user and the payload) makes a
tampered, truncated or foreign cursor a 400 instead of a position nobody was given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from piccolo.columns import Column
from piccolo.columns.combination import WhereRaw
from piccolo.custom_types import Combinable
from piccolo.table import Table

from backend.errors import InvalidInput
from backend.services.clock import aware

__all__ = ["MAX_CURSOR_LENGTH", "Cursor", "CursorSigner", "keyset_page", "name_contains"]

MAX_CURSOR_LENGTH = 200
_MAC_BYTES = 16


@dataclass(frozen=True)
class Cursor:
    """The sort key of the last row already shown: its timestamp and its id (the tie-breaker)."""

    at: datetime
    id: uuid.UUID


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Makes and reads the cursors of one server (every process shares the secret)."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"backapp keyset cursor\x00" + secret).digest()

    def _mac(self, kind: str, user_id: uuid.UUID, payload: bytes) -> bytes:
        message = f"{kind}\x00{user_id}\x00".encode() + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, user_id: uuid.UUID, cursor: Cursor) -> str:
        """The cursor that continues list ``kind`` of ``user_id`` after ``cursor``'s row."""
        at = aware(cursor.at)
        assert at is not None
        payload = msgspec.json.encode([at.isoformat(), str(cursor.id)])
        return f"{_b64(payload)}.{_b64(self._mac(kind, user_id, payload))}"

    def position(self, kind: str, user_id: uuid.UUID, after: str | None) -> Cursor | None:
        """Where a page of list ``kind`` starts: after the row of cursor ``after`` (checked as
        :meth:`decode` does), or at the beginning when there is none."""
        return self.decode(kind, user_id, after) if after else None

    def next_after(self, kind: str, user_id: uuid.UUID, more: Cursor | None) -> str | None:
        """The ``after`` of the page that follows, or ``None`` on the last page (no ``more``)."""
        return self.encode(kind, user_id, more) if more is not None else None

    def decode(self, kind: str, user_id: uuid.UUID, text: str, field: str = "after") -> Cursor:
        """The position in ``text``; :class:`InvalidInput` (400) unless this server made it for
        this list and this user."""
        invalid = InvalidInput(f"{field}: not a cursor this server gave out", field=field)
        if len(text) > MAX_CURSOR_LENGTH or text.count(".") != 1:
            raise invalid
        body, mac = text.split(".")
        try:
            payload = _unb64(body)
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise invalid from None
        if not hmac.compare_digest(given, self._mac(kind, user_id, payload)):
            raise invalid
        try:
            at_text, id_text = msgspec.json.decode(payload, type=tuple[str, str])
            at = aware(datetime.fromisoformat(at_text))
            assert at is not None
            return Cursor(at=at, id=uuid.UUID(id_text))
        except (msgspec.DecodeError, ValueError):
            raise invalid from None


def name_contains(column: str, text: str) -> WhereRaw:
    """``column`` contains ``text``, ignoring case, with ``%`` and ``_`` in ``text`` taken
    literally (an explicit ESCAPE: SQLite has no default escape character, PostgreSQL has one)."""
    pattern = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return WhereRaw(f"LOWER({column}) LIKE {{}} ESCAPE '\\'", f"%{pattern}%")


async def keyset_page(
    table: type[Table],
    where: Combinable,
    at: Column,
    after: Cursor | None,
    limit: int,
    *,
    newest_first: bool,
    columns: Sequence[Column] = (),
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of the rows of ``table`` that meet ``where``, ordered by ``(at, id)`` (descending
    when ``newest_first``), after ``after``; and the cursor of the next page, None on the last one.
    The rows have ``columns`` (all without; ``at`` and the primary key among them).

    The leading ``at <= t`` (``>=`` ascending) is implied by the rest; it is there as a range the
    index can seek to (SQLite scans the whole index for a bare ``a < t OR (a = t AND id < i)``)."""
    pk = table._meta.primary_key
    if after is not None:
        if newest_first:
            where = where & ((at <= after.at) & ((at < after.at) | (pk < after.id)))
        else:
            where = where & ((at >= after.at) & ((at > after.at) | (pk > after.id)))
    rows = (
        await table.select(*columns)
        .where(where)
        .order_by(at, pk, ascending=not newest_first)
        .limit(limit + 1)
    )
    page: list[dict[str, Any]] = rows[:limit]
    if len(rows) <= limit or not page:
        return page, None
    last_at = aware(page[-1][at._meta.name])
    assert last_at is not None
    last_id = page[-1]["id"]
    return page, Cursor(
        at=last_at, id=last_id if isinstance(last_id, uuid.UUID) else uuid.UUID(str(last_id))
    )
