"""The agent's HTTP seams: the control plane (BackApp's agent API) and the storage (pre-signed URLs).

``ControlPlane`` and ``Storage`` (in ``protocol``) are the two protocols the engine talks to.
``ApiClient`` and ``HttpStorage`` implement them over httpx; a server that runs the engine in-process can implement them
directly against its services. Both httpx clients take an injectable ``transport``, so unit tests run
against ``httpx.MockTransport``.

The API key goes only to the BackApp server (``X-Agent-API-Key``), never to storage. Pre-signed URLs
are logged and put into error messages without their query string (``redact_url``): the query *is*
the credential.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import msgspec
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from ._errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    NetworkError,
    NotFoundError,
    StorageError,
)
from .protocol import (
    AgentRef,
    BackupInfo,
    Body,
    ConfigInfo,
    Heartbeat,
    Lease,
    PartTicket,
    RestoreTicket,
    RunRequest,
    StartResponse,
    UploadedPart,
)

__all__ = [
    "API_KEY_HEADER",
    "AgentSocket",
    "ApiClient",
    "HttpStorage",
    "RetryPolicy",
    "install_log_redaction",
    "parse_retry_after",
    "redact_url",
    "websocket_url",
]

log = logging.getLogger("desktop_agent.engine.api")

API_KEY_HEADER = "X-Agent-API-Key"
#: HTTP statuses worth trying again: rate limited, bad gateway, unavailable, gateway timeout.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Transport errors worth trying again (the request may not have reached the server).
RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without its query string, fragment and user info: safe to log.

    >>> redact_url("https://s3.example.com/b/key.tar.gz?X-Amz-Signature=abc")
    'https://s3.example.com/b/key.tar.gz'
    """
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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


T = TypeVar("T")


def _decode(data: Any, kind: type[T], path: str) -> T:
    """``data`` as ``kind``, or an ``ApiError`` that says which field the server got wrong."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
}


def _api_error(response: httpx.Response, path: str) -> ApiError:
    error, detail = "error", response.reason_phrase or "request failed"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = str(body.get("error") or error)
        detail = str(body.get("detail") or body.get("message") or detail)
    cls = _ERRORS_BY_STATUS.get(response.status_code, ApiError)
    if cls is AuthenticationError:
        detail += " (is the API key right? run `backapp-agent configure` again)"
    return cls(response.status_code, error, detail, path=path)


class ApiClient:
    """The BackApp agent API over httpx, with retries on transient failures.

    Transient failures (connection errors, timeouts, 429 with ``Retry-After``, 502/503/504) are retried
    per ``retry``; other 4xx answers raise at once as ``ApiError`` subclasses. ``sleep`` and ``rand`` are
    injectable so tests run without waiting.
    """

    def __init__(
        self,
        server_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        user_agent: str = "backapp-agent",
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.server_features: frozenset[str] | None = None
        """The ``features`` of the last heartbeat answer (``None``: no heartbeat yet)."""
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.Client(
            base_url=self.server_url,
            headers={
                API_KEY_HEADER: api_key,
                "User-Agent": user_agent,
                "Accept": "application/json",
            },
            transport=transport,
            timeout=timeout or httpx.Timeout(60.0, connect=10.0),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the spec's endpoints -----------------------------------------------------------------------

    def heartbeat(self, *, version: str, platform: str, timezone: str | None = None) -> Heartbeat:
        """``timezone`` (an IANA name) tells the server which zone the schedules run in."""
        path = "/api/agent/heartbeat"
        payload = {"version": version, "platform": platform}
        try:
            body = self._call(
                "POST", path, {**payload, "timezone": timezone} if timezone else payload
            )
        except ApiError as exc:
            if not timezone or exc.status != 400 or "timezone" not in exc.detail:
                raise
            # the server's time zone database lacks ours: the heartbeat matters more
            log.warning("the server refused the time zone %r: %s", timezone, exc.detail)
            body = self._call("POST", path, payload)
        beat = _decode(body, Heartbeat, path)
        self.server_features = frozenset(beat.features)
        return beat

    def list_configs(self) -> list[ConfigInfo]:
        body = self._call("GET", "/api/agent/configs")
        return _decode(body.get("configs") or [], list[ConfigInfo], "/api/agent/configs")

    def start_backup(
        self,
        *,
        config_id: str,
        filename: str,
        filesize: int,
        multipart: bool = False,
        size: int | None = None,
        sha256: str | None = None,
        trigger: str | None = None,
        attempt: int | None = None,
        max_attempts: int | None = None,
        run_request_id: str | None = None,
        part_checksum: str | None = None,
    ) -> StartResponse:
        payload: dict[str, Any] = {
            "configId": config_id,
            "filename": filename,
            "filesize": filesize,
            "multipart": multipart,
        }
        if size is not None:
            payload["size"] = size
        if sha256 is not None:
            payload["sha256"] = sha256
        for name, value in (
            ("trigger", trigger),
            ("attempt", attempt),
            ("maxAttempts", max_attempts),
            ("runRequestId", run_request_id),
            ("partChecksum", part_checksum),
        ):
            if value is not None:
                payload[name] = value
        body = self._call("POST", "/api/agent/backup/start", payload)
        return _decode(body, StartResponse, "/api/agent/backup/start")

    def complete_backup(
        self,
        *,
        log_id: str,
        status: str,
        files_processed: int,
        bytes_transferred: int,
        duration_ms: int,
        errors: Sequence[Mapping[str, str]] = (),
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "logId": log_id,
            "status": status,
            "filesProcessed": files_processed,
            "bytesTransferred": bytes_transferred,
            "duration": duration_ms,
            "errors": [dict(e) for e in errors],
        }
        if size is not None:
            payload["size"] = size
        if sha256 is not None:
            payload["sha256"] = sha256
        if error is not None:
            payload["error"] = error
        body = self._call("POST", "/api/agent/backup/complete", payload)
        return str(body.get("status", status))

    def send_log(self, level: str, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        message = message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        payload: dict[str, Any] = {"level": level, "message": message[:10_000]}
        if metadata:
            payload["metadata"] = dict(metadata)
        self._call("POST", "/api/agent/log", payload)

    # -- multipart extension ------------------------------------------------------------------------

    def part_url(
        self,
        *,
        log_id: str,
        part_number: int,
        size: int,
        sha256: str | None = None,
        crc32: str | None = None,
    ) -> PartTicket:
        payload: dict[str, Any] = {"logId": log_id, "partNumber": part_number, "size": size}
        if crc32 is not None:
            payload["crc32"] = crc32
        else:
            payload["sha256"] = sha256
        body = self._call("POST", "/api/agent/backup/upload/part", payload)
        return _decode(body.get("part"), PartTicket, "/api/agent/backup/upload/part")

    def complete_upload(self, *, log_id: str, parts: Sequence[UploadedPart]) -> int:
        body = self._call(
            "POST",
            "/api/agent/backup/upload/complete",
            {"logId": log_id, "parts": msgspec.to_builtins(list(parts))},
        )
        size = body.get("size")
        return int(size) if isinstance(size, int) else -1

    def abort_upload(self, *, log_id: str, reason: str) -> None:
        self._call("POST", "/api/agent/backup/upload/abort", {"logId": log_id, "reason": reason})

    # -- schedules, leases, live progress extension ----------------------------------------------

    def acquire_lease(self, config_id: str, ttl_seconds: int) -> Lease:
        """Take the config's run lease; ``ConflictError`` (409) when another runner holds it (its
        ``detail`` says who and until when)."""
        body = self._call(
            "POST", "/api/agent/lease", {"configId": config_id, "ttlSeconds": ttl_seconds}
        )
        return _decode(body.get("lease"), Lease, "/api/agent/lease")

    def renew_lease(self, config_id: str, token: str, ttl_seconds: int) -> Lease:
        """Extend a held lease; ``ConflictError`` when it was lost (expired and taken)."""
        body = self._call(
            "POST",
            "/api/agent/lease/renew",
            {"configId": config_id, "token": token, "ttlSeconds": ttl_seconds},
        )
        return _decode(body.get("lease"), Lease, "/api/agent/lease/renew")

    def release_lease(self, config_id: str, token: str) -> None:
        self._call("POST", "/api/agent/lease/release", {"configId": config_id, "token": token})

    def send_progress(self, payload: Mapping[str, Any]) -> None:
        """One live-progress event (``POST /api/agent/backup/progress``)."""
        self._call("POST", "/api/agent/backup/progress", dict(payload))

    # -- restore extension --------------------------------------------------------------------------

    def list_backups(self, *, config_id: str | None = None, limit: int = 100) -> list[BackupInfo]:
        """The completed backups this agent may restore, newest first."""
        query = urlencode(
            {"configId": config_id, "limit": limit} if config_id else {"limit": limit}
        )
        path = "/api/agent/backups"
        body = self._call("GET", f"{path}?{query}")
        return _decode(body.get("backups") or [], list[BackupInfo], path)

    def restore_ticket(self, backup_id: str) -> RestoreTicket:
        """A fresh pre-signed GET for one backup's object, with its size and SHA-256."""
        body = self._call("POST", "/api/agent/restore", {"backupId": backup_id})
        return _decode(body.get("restore"), RestoreTicket, "/api/agent/restore")

    # -- plumbing -----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        retry = 0
        while True:
            try:
                response = self._http.request(method, path, json=payload)
            except RETRYABLE_EXCEPTIONS as exc:
                if retry + 1 >= self.retry.max_attempts:
                    raise NetworkError(
                        f"could not reach the BackApp server at {self.server_url} ({path}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                delay = self.retry.delay(retry, self._rand)
                log.warning(
                    "%s %s failed (%s); retrying in %.1fs", method, path, type(exc).__name__, delay
                )
            except httpx.HTTPError as exc:
                raise NetworkError(f"request to {self.server_url}{path} failed: {exc}") from exc
            else:
                if response.status_code < 400:
                    return self._json(response, path)
                if (
                    response.status_code not in RETRYABLE_STATUSES
                    or retry + 1 >= self.retry.max_attempts
                ):
                    raise _api_error(response, path)
                delay = self.retry.delay(retry, self._rand)
                after = parse_retry_after(response.headers.get("Retry-After"))
                if after is not None:
                    delay = min(after, self.retry.max_retry_after)
                log.warning(
                    "%s %s answered %d; retrying in %.1fs",
                    method,
                    path,
                    response.status_code,
                    delay,
                )
            self._sleep(delay)
            retry += 1

    @staticmethod
    def _json(response: httpx.Response, path: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "bad_response", "the answer is not JSON", path=path
            ) from exc
        if not isinstance(body, dict):
            raise ApiError(
                response.status_code, "bad_response", "the answer is not an object", path=path
            )
        return body


class HttpStorage:
    """PUTs to pre-signed URLs: one attempt per call; the uploader decides about retries.

    Never sends the API key. Errors carry the URL without its query string.
    """

    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        user_agent: str = "backapp-agent",
    ) -> None:
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout or httpx.Timeout(300.0, connect=15.0),
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]) -> str | None:
        where = redact_url(url)
        pieces = [memoryview(body)] if isinstance(body, Body) else [memoryview(b) for b in body]
        sent = dict(headers)
        if not any(k.lower() == "content-length" for k in sent):
            sent["Content-Length"] = str(sum(p.nbytes for p in pieces))
        try:
            # Streamed in 1 MiB slices: the HTTP layer copies each slice, never a whole part.
            response = self._http.put(url, content=_slices(pieces), headers=sent)
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


def _slices(pieces: Sequence[memoryview], size: int = 1024 * 1024) -> Iterator[bytes]:
    for piece in pieces:
        flat = piece.cast("B") if piece.ndim != 1 or piece.format != "B" else piece
        for start in range(0, flat.nbytes, size):
            yield flat[start : start + size]  # type: ignore[misc]


def _storage_error_code(response: httpx.Response) -> str:
    """S3's ``<Code>`` from an XML error body, if there is one (never the whole body)."""
    text = response.text[:4096]
    start, end = text.find("<Code>"), text.find("</Code>")
    if 0 <= start < end:
        return f" {text[start + 6 : end]}"
    return ""


class _RedactUrls(logging.Filter):
    """Strips query strings from URLs in log records (httpx logs every request's full URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(a)
                if isinstance(a, httpx.URL) or (isinstance(a, str) and "X-Amz-" in a)
                else a
                for a in record.args
            )
        return True


def install_log_redaction() -> None:
    """Make the ``httpx``/``httpcore`` loggers safe: their records never show a pre-signed URL's
    query string. Applications call this once (the engine does not touch logging at import)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrls) for f in logger.filters):
            logger.addFilter(_RedactUrls())


# -- the agent's WebSocket (Back Up Now within seconds) ------------------------------------------------


def websocket_url(server_url: str) -> str:
    """``GET /api/agent/ws`` of the server at ``server_url`` (``http`` -> ``ws``, ``https`` -> ``wss``).

    >>> websocket_url("https://backapp.example.org/base/")
    'wss://backapp.example.org/base/api/agent/ws'
    """
    parts = urlsplit(server_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme)
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/api/agent/ws", "", ""))


#: Close codes of ``GET /api/agent/ws``: the key was refused; rate limited.
CLOSE_REFUSED = frozenset({4401, 4403})
CLOSE_RATE_LIMITED = 4429


class AgentSocket:
    """Keeps ``GET /api/agent/ws`` open on a background thread and hands ``run`` messages to
    ``on_run``.

    Reconnects with exponential backoff and jitter (``min_backoff`` doubling up to ``max_backoff``);
    sends ``{"type": "ping"}`` when nothing arrived for ``ping_interval`` seconds (besides the
    protocol's own pings). ``on_run`` and ``on_state`` (``True`` on connect, ``False`` on loss) are
    called on the socket's thread: keep them quick. ``send`` posts a message (e.g. progress) when
    connected. The heartbeat's ``runRequests`` is the fallback while the socket is down.
    """

    def __init__(
        self,
        server_url: str,
        api_key: str,
        *,
        on_run: Callable[[RunRequest], None],
        on_state: Callable[[bool], None] | None = None,
        ping_interval: float = 20.0,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        rand: Callable[[], float] = random.random,
        user_agent: str = "backapp-agent",
    ) -> None:
        self.url = websocket_url(server_url)
        self._key = api_key
        self._on_run = on_run
        self._on_state = on_state
        self._ping_interval = ping_interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._rand = rand
        self._user_agent = user_agent
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ws: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self.agent: AgentRef | None = None
        """Who the server says we are (its ``hello`` message)."""
        self.connects = 0
        """Successful connections so far (for status and tests)."""

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="backapp-socket", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:  # already closing
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def send(self, message: Mapping[str, Any]) -> bool:
        """Send a JSON message; ``False`` when the socket is down (the caller falls back to HTTP)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            with self._lock:
                ws.send(json.dumps(dict(message)))
        except (WebSocketException, OSError):
            return False
        return True

    # -- the thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with ws_connect(
                    self.url,
                    additional_headers={API_KEY_HEADER: self._key},
                    user_agent_header=self._user_agent,
                    open_timeout=10,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    close_timeout=2,
                ) as ws:
                    failures = 0
                    code = self._serve(ws)
                if code in CLOSE_REFUSED:  # the key was refused: no point in hammering
                    log.error(
                        "the server closed the agent socket (%d): is the API key valid?", code
                    )
                    failures = 16
                elif code == CLOSE_RATE_LIMITED:
                    failures = 4
            except InvalidStatus as exc:
                status = exc.response.status_code
                level = logging.ERROR if status == 401 else logging.WARNING
                log.log(level, "the server refused the agent socket (%d)", status)
                # 401/403/404: no point in hammering; wait the longest backoff.
                failures = max(failures + 1, 16 if status in (401, 403, 404) else 0)
            except (OSError, TimeoutError, WebSocketException) as exc:
                if failures == 0:
                    log.info("agent socket: cannot connect to %s: %s", self.url, exc)
                failures += 1
            if self._stop.is_set():
                break
            if failures == 0:  # it was connected: reconnect soon, but not in a tight loop
                failures = 1
            ceiling = min(self._max_backoff, self._min_backoff * float(2 ** min(failures, 16)))
            self._stop.wait(ceiling / 2 + ceiling / 2 * self._rand())

    def _serve(self, ws: ClientConnection) -> int | None:
        """Read messages until the socket closes; returns the close code the server sent."""
        self._ws = ws
        self.connects += 1
        log.info("agent socket connected to %s", self.url)
        self._state(True)
        try:
            while not self._stop.is_set():
                try:
                    raw = ws.recv(timeout=self._ping_interval)
                except TimeoutError:
                    with self._lock:
                        ws.send(json.dumps({"type": "ping"}))
                    continue
                self._handle(raw)
        except ConnectionClosed as exc:
            if not self._stop.is_set():
                log.info("agent socket closed: %s", exc)
            return exc.rcvd.code if exc.rcvd is not None else None
        except (WebSocketException, OSError) as exc:
            if not self._stop.is_set():
                log.info("agent socket failed: %s", exc)
        finally:
            self._ws = None
            try:
                ws.close()
            except Exception:  # already closed
                pass
            self._state(False)
        return None

    def _handle(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("agent socket: ignoring a message that is not JSON")
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "run":
            request_id, config_id = message.get("runRequestId"), message.get("configId")
            if isinstance(request_id, str) and isinstance(config_id, str):
                log.info("Back Up Now requested for config %s", config_id)
                try:
                    self._on_run(
                        RunRequest(
                            id=request_id,
                            config_id=config_id,
                            requested_at=_str_or_none(message.get("requestedAt")),
                        )
                    )
                except Exception:  # a handler's bug must not drop the socket
                    log.exception("the run request handler failed")
        elif kind == "error":
            log.warning("agent socket: the server says %s", message.get("detail") or message)
        elif kind == "hello":
            agent = message.get("agent")
            if isinstance(agent, dict):
                try:
                    self.agent = msgspec.convert(agent, AgentRef)
                except msgspec.ValidationError:
                    pass

    def _state(self, up: bool) -> None:
        if self._on_state is not None:
            try:
                self._on_state(up)
            except Exception:
                log.exception("the socket state handler failed")


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
