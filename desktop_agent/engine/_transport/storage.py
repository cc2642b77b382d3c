"""``HttpStorage``: bytes PUT to and read from pre-signed URLs (never with the API key)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import httpx

from .._closing import Closing
from .._errors import StorageError
from ..protocol import Body
from .redact import redact_url
from .retry import RETRYABLE_EXCEPTIONS, RETRYABLE_STATUSES
from .throttle import SLICE, Throttle
from .tls import tls_context

if TYPE_CHECKING:
    from .._settings import AgentSettings
    from .bandwidth import BandwidthControl

__all__ = ["HttpStorage"]


DEFAULT_STALL_TIMEOUT = 60.0
"""Seconds without a byte moving before a request to storage is abandoned (see ``HttpStorage``)."""


class HttpStorage(Closing):
    """PUTs to and GETs from pre-signed URLs: one attempt per call; the caller decides about retries.

    A request is abandoned once no byte has moved for ``stall_timeout`` seconds: storage took no
    data (every write waits at most that long), or did not answer once it had it all (the read),
    or could not be connected to. A slow link is fine as long as bytes move; a black hole costs
    one stall, not a whole attempt's worth of a long fixed timeout. Never sends the API key.
    Errors carry the URL without its query string.

    ``upload_limit`` and ``download_limit`` (the agent's ``limitUpload`` / ``limitDownload``) are
    shared by every request of this client, so parallel parts and packs stay under them together.
    ``bandwidth`` instead: the agent's control (``for_settings``), whose buckets every client of
    the process shares and whose rates the server's limits change while transfers run; a client
    then also waits before each upload while backups are paused (metered connection, battery).
    """

    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        user_agent: str = "backapp-agent",
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        upload_limit: Throttle | None = None,
        download_limit: Throttle | None = None,
        bandwidth: BandwidthControl | None = None,
    ) -> None:
        self.stall_timeout = stall_timeout
        self._upload_limit = upload_limit
        self._download_limit = download_limit
        self.bandwidth = bandwidth
        self._http = httpx.Client(
            transport=transport,
            # httpx applies these to each socket operation, not to the whole request.
            timeout=timeout or httpx.Timeout(stall_timeout, connect=min(15.0, stall_timeout)),
            headers={"User-Agent": user_agent},
            follow_redirects=False,
            verify=tls_context(),
        )

    @classmethod
    def for_settings(
        cls,
        settings: AgentSettings,
        *,
        user_agent: str,
        transport: httpx.BaseTransport | None = None,
    ) -> HttpStorage:
        """The agent's storage client, with its stall timeout and the agent's bandwidth (the
        machine's own limits from ``settings``, the server's as heartbeats bring them)."""
        from .bandwidth import agent_bandwidth

        bandwidth = agent_bandwidth(settings)
        return cls(
            transport=transport,
            user_agent=user_agent,
            stall_timeout=settings.storage_stall_timeout,
            bandwidth=bandwidth,
        )

    @property
    def upload_limit(self) -> Throttle | None:
        """The bucket uploads take from now (``None``: no limit)."""
        if self._upload_limit is not None or self.bandwidth is None:
            return self._upload_limit
        bucket = self.bandwidth.upload
        return bucket if bucket.rate is not None or bucket.paused is not None else None

    @property
    def download_limit(self) -> Throttle | None:
        """The bucket downloads take from now (``None``: no limit)."""
        if self._download_limit is not None or self.bandwidth is None:
            return self._download_limit
        bucket = self.bandwidth.download
        return bucket if bucket.rate is not None else None

    def close(self) -> None:
        self._http.close()

    def put(self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]) -> str | None:
        where = redact_url(url)
        pieces = [memoryview(body)] if isinstance(body, Body) else [memoryview(b) for b in body]
        sent = dict(headers)
        if not any(k.lower() == "content-length" for k in sent):
            sent["Content-Length"] = str(sum(p.nbytes for p in pieces))
        limit = self.upload_limit
        if limit is not None and limit.paused is not None:
            # Backups are paused (metered connection, battery): this request waits to start.
            limit.wait_ready(self.bandwidth.released if self.bandwidth is not None else None)
        try:
            # Streamed in 1 MiB slices: the HTTP layer copies each slice, never a whole part.
            response = self._http.put(url, content=_slices(pieces, limit=limit), headers=sent)
        except httpx.TimeoutException as exc:
            raise StorageError(
                f"upload to {where} stalled: {_stalled(exc, self.stall_timeout)}", transient=True
            ) from exc
        except RETRYABLE_EXCEPTIONS as exc:
            raise StorageError(
                f"upload to {where} failed: {type(exc).__name__}: {exc}", transient=True
            ) from exc
        except httpx.HTTPError as exc:
            raise StorageError(f"upload to {where} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            # 403 is what an expired pre-signed URL answers: a fresh URL fixes it.
            transient = response.status_code in RETRYABLE_STATUSES or response.status_code in (
                403,
                500,
            )
            code = _storage_error_code(response)
            raise StorageError(
                f"storage refused the upload to {where}: {response.status_code}{code}",
                status=response.status_code,
                transient=transient,
            )
        etag: str | None = response.headers.get("ETag")
        return etag

    def put_object(self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]) -> bool:
        """PUT one object of a snapshot repository; ``False`` when storage refuses it because an
        object is already at that name (``If-None-Match: *`` answered 412: for a content-addressed
        name, the same bytes are already stored)."""
        try:
            self.put(url, body, headers)
        except StorageError as exc:
            if exc.status == 412:
                return False
            raise
        return True

    def get_object(self, url: str, *, start: int | None = None, end: int | None = None) -> bytes:
        """The object at a pre-signed GET URL, or its bytes ``start`` to ``end`` (inclusive).
        ``StorageError`` with ``status`` 404 when there is no such object."""
        return b"".join(self.iter_object(url, start=start, end=end))

    def iter_object(
        self, url: str, *, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        """``get_object``'s bytes as they come off the connection (pieces of at most 64 KiB), so
        that a reader can use each part of a large range as it arrives instead of holding the
        whole range (and httpx's joined copy of it). The request is made at the first ``next``;
        closing the iterator early closes the connection."""
        where = redact_url(url)
        headers = {} if start is None else {"Range": f"bytes={start}-{'' if end is None else end}"}
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code >= 300:
                    response.read()
                    transient = response.status_code in RETRYABLE_STATUSES or (
                        response.status_code in (403, 500)
                    )
                    raise StorageError(
                        f"storage refused the download from {where}: {response.status_code}"
                        f"{_storage_error_code(response)}",
                        status=response.status_code,
                        transient=transient,
                    )
                # A server that ignores Range sends the whole object: keep the part asked for.
                whole = start is not None and response.status_code != 206
                skip = start if whole and start is not None else 0
                left = end - skip + 1 if whole and end is not None else None
                limit = self.download_limit
                for piece in response.iter_bytes(SLICE if limit is not None else None):
                    if limit is not None:
                        limit.take(len(piece))
                    if skip:
                        if len(piece) <= skip:
                            skip -= len(piece)
                            continue
                        piece, skip = piece[skip:], 0
                    if left is not None:
                        if left <= 0:
                            break
                        piece = piece[:left]
                        left -= len(piece)
                    yield piece
        except RETRYABLE_EXCEPTIONS as exc:
            raise StorageError(
                f"download from {where} failed: {type(exc).__name__}: {exc}", transient=True
            ) from exc
        except httpx.HTTPError as exc:
            raise StorageError(
                f"download from {where} failed: {type(exc).__name__}: {exc}"
            ) from exc


def _stalled(exc: httpx.TimeoutException, seconds: float) -> str:
    """What a timeout means, in words."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"could not connect to the storage within {seconds:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"the storage took no data for {seconds:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"the storage did not answer for {seconds:g} s after taking the data"
    return f"no answer from the storage for {seconds:g} s"


def _slices(
    pieces: Sequence[memoryview], size: int = 1024 * 1024, *, limit: Throttle | None = None
) -> Iterator[bytes]:
    if limit is not None:
        size = SLICE  # small slices keep a limited upload smooth
    for piece in pieces:
        flat = piece.cast("B") if piece.ndim != 1 or piece.format != "B" else piece
        for start in range(0, flat.nbytes, size):
            if limit is not None:
                limit.take(min(size, flat.nbytes - start))
            yield flat[start : start + size]  # type: ignore[misc]


def _storage_error_code(response: httpx.Response) -> str:
    """S3's ``<Code>`` from an XML error body, if there is one (never the whole body)."""
    text = response.text[:4096]
    start, end = text.find("<Code>"), text.find("</Code>")
    if 0 <= start < end:
        return f" {text[start + 6 : end]}"
    return ""
