"""The local backend's signed URLs: what one URL allows, how it is signed, and how it is checked.

A URL is ``{base_url}/storage/o/{key}?X-Backapp-…``; its HMAC-SHA256, under a key derived from the
server secret, covers the method, the exact key, the expiry and every constraint (size, SHA-256 or a
part's CRC32, upload id, part number, download name), so changing any of them breaks the signature.
This is pure computation: no file is touched here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from .base import AccessDenied, PresignedRequest, validate_expires_in

__all__ = [
    "ROUTE_PREFIX",
    "Grant",
    "UrlSigner",
    "canonical_string",
]

ROUTE_PREFIX = "/storage/o"
"""Where :func:`backend.storage.local_routes.local_storage_handlers` serves objects."""

P_METHOD = "X-Backapp-Method"
P_EXPIRES = "X-Backapp-Expires"
P_SIZE = "X-Backapp-Size"
P_SHA256 = "X-Backapp-Sha256"
P_CRC32 = "X-Backapp-Crc32"
P_UPLOAD = "X-Backapp-Upload"
P_PART = "X-Backapp-Part"
P_FILENAME = "X-Backapp-Filename"
P_SIGNATURE = "X-Backapp-Signature"
_PARAMS = frozenset(
    {P_METHOD, P_EXPIRES, P_SIZE, P_SHA256, P_CRC32, P_UPLOAD, P_PART, P_FILENAME, P_SIGNATURE}
)

_SCHEME = "BACKAPP-HMAC-SHA256-V1"
_KEY_DERIVATION_LABEL = b"backapp local-storage url signing v1"
_DIGITS = re.compile(r"[0-9]{1,19}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Grant:
    """What one signed URL allows: one method on one key until ``expires``, within its constraints."""

    method: str
    key: str
    expires: int
    """Unix time (seconds) from which the URL is refused."""
    size: int | None = None
    sha256: str | None = None
    upload_id: str | None = None
    part_number: int | None = None
    filename: str | None = None
    crc32: str | None = None
    """Base64 CRC32 (S3's form) a part's body must have (an upload with ``crc32`` parts)."""


def canonical_string(grant: Grant) -> str:
    """The text the signature covers: every field on its own line, absent ones empty.

    Keys and file names cannot contain a newline (control characters are refused), so the lines are
    unambiguous. ``crc32`` adds a last line only when set, so the URLs signed before it existed stay
    valid.
    """

    def text(value: object | None) -> str:
        return "" if value is None else str(value)

    lines = [
        _SCHEME,
        f"method:{grant.method}",
        f"key:{grant.key}",
        f"expires:{grant.expires}",
        f"size:{text(grant.size)}",
        f"sha256:{text(grant.sha256)}",
        f"upload:{text(grant.upload_id)}",
        f"part:{text(grant.part_number)}",
        f"filename:{text(grant.filename)}",
    ]
    if grant.crc32 is not None:
        lines.append(f"crc32:{grant.crc32}")
    return "\n".join(lines)


def _parse_int(value: str, name: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise AccessDenied(f"{name} is not a number")
    return int(value)


class UrlSigner:
    """Signs grants into URLs and turns a request's URL back into the grant it carries."""

    def __init__(self, base_url: str, secret: bytes, clock: Callable[[], float]) -> None:
        """``base_url``: how clients reach this server (no trailing slash). ``secret``: the server
        secret; a separate signing key is derived from it. ``clock``: Unix time."""
        if not secret:
            raise ValueError("secret must not be empty")
        self.base_url = base_url.rstrip("/")
        self._clock = clock
        self._signing_key = hmac.new(secret, _KEY_DERIVATION_LABEL, hashlib.sha256).digest()

    def signature(self, grant: Grant) -> str:
        """Hex HMAC-SHA256 of :func:`canonical_string`."""
        message = canonical_string(grant).encode("utf-8")
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def url_for(self, grant: Grant) -> str:
        """The signed URL of ``grant``."""
        params: list[tuple[str, str]] = [(P_METHOD, grant.method), (P_EXPIRES, str(grant.expires))]
        if grant.size is not None:
            params.append((P_SIZE, str(grant.size)))
        if grant.sha256 is not None:
            params.append((P_SHA256, grant.sha256))
        if grant.crc32 is not None:
            params.append((P_CRC32, grant.crc32))
        if grant.upload_id is not None:
            params.append((P_UPLOAD, grant.upload_id))
        if grant.part_number is not None:
            params.append((P_PART, str(grant.part_number)))
        if grant.filename is not None:
            params.append((P_FILENAME, grant.filename))
        params.append((P_SIGNATURE, self.signature(grant)))
        path = quote(grant.key, safe="/")
        return f"{self.base_url}{ROUTE_PREFIX}/{path}?{urlencode(params, quote_via=quote)}"

    def expires(self, expires_in: int) -> int:
        """The Unix time ``expires_in`` seconds from now (1 s to 7 days, as SigV4 allows)."""
        return int(self._clock()) + validate_expires_in(expires_in)

    def presign(self, grant: Grant) -> PresignedRequest:
        """The request a client makes with ``grant`` (no headers: everything is in the URL)."""
        return PresignedRequest(
            url=self.url_for(grant),
            method=grant.method,
            headers={},
            expires_at=datetime.fromtimestamp(grant.expires, UTC),
        )

    def verify(self, method: str, key: str, query: Iterable[tuple[str, str]]) -> Grant:
        """The :class:`Grant` a request carries, or :class:`AccessDenied` saying why not.

        ``method`` is the request's method (a HEAD is checked as the GET it previews); ``key`` the
        decoded path after the route prefix; ``query`` the decoded query parameters, in order.
        """
        values: dict[str, str] = {}
        for name, value in query:
            if name in _PARAMS:
                if name in values:
                    raise AccessDenied(f"{name} is given twice")
                values[name] = value
        signature = values.get(P_SIGNATURE, "")
        if not _SIGNATURE.fullmatch(signature):
            raise AccessDenied("the URL is not signed")
        signed_method = values.get(P_METHOD, "")
        expected_method = "GET" if method == "HEAD" else method
        if signed_method != expected_method:
            raise AccessDenied(f"this URL is for {signed_method or 'another method'}, not {method}")

        def optional(name: str) -> str | None:
            value = values.get(name)
            return value or None

        size = optional(P_SIZE)
        part = optional(P_PART)
        grant = Grant(
            method=signed_method,
            key=key,
            expires=_parse_int(values.get(P_EXPIRES, ""), P_EXPIRES),
            size=None if size is None else _parse_int(size, P_SIZE),
            sha256=optional(P_SHA256),
            upload_id=optional(P_UPLOAD),
            part_number=None if part is None else _parse_int(part, P_PART),
            filename=optional(P_FILENAME),
            crc32=optional(P_CRC32),
        )
        if not hmac.compare_digest(self.signature(grant), signature):
            raise AccessDenied("the URL's signature does not match (altered, or for another key)")
        if self._clock() >= grant.expires:
            raise AccessDenied("the URL has expired; ask the server for a new one")
        return grant
