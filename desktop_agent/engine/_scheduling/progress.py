"""Live progress: engine events turned into the server's progress messages, and the event fan-out.

``ProgressReporter`` streams progress (at most ~1 per second) over the socket or ``POST
/api/agent/backup/progress``; ``fan_out`` lets the runner give the engine one sink that feeds both
the reporter and the caller's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._events import (
    ArchiveProgress,
    BackupFailed,
    BackupFinished,
    Event,
    EventSink,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    UploadProgress,
    UploadResumed,
    UploadWaiting,
)
from .._transport.bandwidth import agent_bandwidth

__all__ = ["PRE_LOG_PHASES", "PROGRESS_BY_CONFIG", "ProgressReporter", "fan_out", "waiting_text"]

log = logging.getLogger("desktop_agent.engine.scheduler")

PROGRESS_BY_CONFIG = "progress-by-config"
"""The server feature (heartbeat ``features``): progress by ``configId`` before the log opens."""
PRE_LOG_PHASES = frozenset({"scanning", "archiving"})


def waiting_text(event: UploadWaiting) -> str:
    """``waiting for storage: <the last error> (trying again in 8 s, for 9 more min)``: the
    progress message's ``waiting`` while an upload retries (at most 500 characters)."""
    target = "the BackApp server" if event.waiting_for == "server" else "storage"
    when = f"trying again in {_seconds(event.retry_in)}"
    if event.gives_up_in is not None:
        when += f", for {_seconds(event.gives_up_in)} more"
    text = f"waiting for {target}: {event.reason} ({when})"
    return text if len(text) <= 500 else text[:499] + "…"


def _seconds(value: float) -> str:
    return f"{value / 60:.0f} min" if value >= 90 else f"{value:.0f} s"


class ProgressReporter:
    """An ``EventSink`` that turns engine events into live-progress messages (``docs/agent-api.md``)
    and sends the latest at most once per ``interval`` seconds, from its own thread (the engine never
    waits on the network for it). Before the server has opened the log, progress is sent by
    ``config_id`` (the scan; a small archive being built) when one is given, which the caller does
    only for a server that advertises ``progress-by-config``; otherwise (or in another phase) what
    happened until then is kept, and ``flush`` sends it under the log id the moment the log opens."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        log_id: Callable[[], str | None],
        *,
        config_id: str | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        limit_text: Callable[[], str | None] | None = None,
    ) -> None:
        self._send = send
        self._limit_text = limit_text or agent_bandwidth().upload_text
        self._sent_limit: str | None = None
        self._log_id = log_id
        self._config_id = config_id
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state: dict[str, Any] = {
            "phase": "scanning",
            "filesDone": 0,
            "filesTotal": 0,
            "bytesDone": 0,
            "bytesTotal": 0,
            "rate": 0.0,
            "eta": None,
        }
        self._dirty = False
        self._force = False
        self._last = float("-inf")
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="backapp-progress", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            s, phase = self._state, self._state["phase"]
            match event:
                case ScanStarted():
                    s["phase"] = "scanning"
                case ScanProgress() | ScanFinished():
                    s.update(phase="scanning", filesTotal=event.files, bytesTotal=event.bytes)
                case ArchiveProgress():
                    done = event.files_done >= event.files_total and (
                        event.bytes_done >= event.bytes_total
                    )
                    s.update(
                        phase="uploading" if done else "archiving",
                        filesDone=event.files_done,
                        filesTotal=event.files_total,
                        bytesDone=event.bytes_done,
                        bytesTotal=event.bytes_total,
                        rate=round(event.rate, 1),
                        eta=round(event.eta, 1) if event.eta is not None else None,
                    )
                case UploadProgress():
                    if s["phase"] == "uploading":
                        s["rate"] = round(event.rate, 1)
                case UploadWaiting():
                    s["waiting"] = waiting_text(event)
                    self._force = True
                case UploadResumed():
                    s.pop("waiting", None)
                    self._force = True
                case BackupFinished() | BackupFailed():
                    self._stop.set()
                case _:
                    return
            self._dirty = True
            self._force = self._force or s["phase"] != phase
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Woken by events, and every interval: a limit can change (a pause) while none come.
            self._wake.wait(self._interval)
            if self._stop.is_set():
                return
            left = self._last + self._interval - self._clock()
            if left > 0 and not self._force:
                self._stop.wait(left)  # ``_wake`` stays set: send when the interval is over
                continue
            log_id = self._log_id()
            with self._lock:
                if log_id is not None:
                    ref = {"logId": log_id}
                elif self._config_id is not None and self._state["phase"] in PRE_LOG_PHASES:
                    ref = {"configId": self._config_id}
                else:  # the server has not opened the log yet, and cannot take it by config
                    ref = None
            if ref is None:
                self._stop.wait(min(self._interval, 0.25))
                continue
            with self._lock:
                self._wake.clear()
                if self._limit_text() != self._sent_limit:
                    self._dirty = True
                if not self._dirty:
                    continue
                payload = self._payload(ref)
                self._dirty = self._force = False
            if log_id is None and self._log_id() is not None:
                continue  # the log opened meanwhile: ``flush`` sends this state under its id
            self._last = self._clock()
            try:
                self._send(payload)
            except Exception as exc:  # progress is best effort
                log.debug("could not send progress: %s", exc)
                continue
            with self._lock:
                self.sent += 1

    def _payload(self, ref: dict[str, Any]) -> dict[str, Any]:
        """The message: the state, and the bandwidth limit in words (``limited to 10 Mbit/s``,
        ``paused: on battery power``) while one holds."""
        limit = self._sent_limit = self._limit_text()
        return {**ref, **self._state, **({"limit": limit} if limit else {})}

    def flush(
        self, send: Callable[[dict[str, Any]], None] | None = None, *, timeout: float = 2.0
    ) -> bool:
        """Send the latest state now through ``send`` (default: the reporter's own), if the log is
        open, waiting for it at most ``timeout`` seconds (a slow or rate-limited server must not hold
        the backup up; the send then finishes in the background). The runner calls it as the log
        opens, before the upload begins, so that the server has the progress so far (the scan, and
        for an archive under the multipart threshold all of its archiving) while the backup is
        still running, whatever the interval. Best effort: ``True`` when it was sent in time."""
        log_id = self._log_id()
        if log_id is None:
            return False
        with self._lock:
            payload = self._payload({"logId": log_id})
            self._dirty = self._force = False
            self._last = self._clock()
        done = threading.Event()
        ok: list[bool] = []

        def work() -> None:
            try:
                (send or self._send)(payload)
            except Exception as exc:  # progress is best effort
                log.debug("could not send progress: %s", exc)
            else:
                with self._lock:
                    self.sent += 1
                ok.append(True)
            finally:
                done.set()

        threading.Thread(target=work, name="backapp-progress-flush", daemon=True).start()
        return done.wait(timeout) and bool(ok)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)


def fan_out(*sinks: EventSink | None) -> EventSink:
    """One ``EventSink`` that passes each event to every given sink (``None`` ones left out)."""
    live = [s for s in sinks if s is not None]

    def sink(event: Event) -> None:
        for s in live:
            s(event)

    return sink
