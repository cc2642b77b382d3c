"""``AgentSocket``: the agent's WebSocket (``GET /api/agent/ws``), for Back Up Now within seconds."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from ..protocol import AgentRef, RunRequest
from .client import API_KEY_HEADER

__all__ = ["AgentSocket", "websocket_url"]

log = logging.getLogger("desktop_agent.engine.api")


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
        on_restore: Callable[[str], None] | None = None,
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
        self.on_restore = on_restore
        """Called with a restore's id when the web console asks this machine for one."""
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
        elif kind == "restore":
            restore_id = message.get("restoreId")
            if isinstance(restore_id, str) and self.on_restore is not None:
                log.info("restore %s requested from the web console", restore_id)
                try:
                    self.on_restore(restore_id)
                except Exception:  # a handler's bug must not drop the socket
                    log.exception("the restore request handler failed")
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
