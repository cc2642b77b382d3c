"""An in-memory BackApp agent API + pre-signed storage, served through ``httpx.MockTransport``.

It follows docs/agent-api.md closely enough to exercise the agent's client, uploader and engine
end to end without sockets: filename validation, 409 on an existing key, signed size/SHA-256 on single
PUTs and parts, ETags, multipart assembly, abort, and the size/SHA-256 check on ``backup/complete``.
``faults`` lets a test make any request fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from desktop_agent.engine import (
    ApiClient,
    BackupEngine,
    ControlPlane,
    EngineOptions,
    EventSink,
    HttpStorage,
    RetryPolicy,
    Scheduler,
    ScheduleStore,
)

API_KEY = "bka_test-key"
STORAGE_HOST = "storage.test"
FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


@dataclass
class FakeLog:
    id: str
    config_id: str
    s3_path: str
    status: str = "running"
    multipart: bool = False
    declared_size: int | None = None
    declared_sha256: str | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    part_sha: dict[int, str] = field(default_factory=dict)
    complete: dict[str, Any] | None = None
    error: str | None = None


def config(config_id: str, *paths: str, **options: Any) -> dict[str, Any]:
    excludes = options.pop("excludes", [])
    return {
        "id": config_id,
        "name": f"Config {config_id}",
        "sources": [{"path": p} for p in paths],
        "destination": {"bucket": "b", "region": "us-east-1", "prefix": "p"},
        "options": {"type": "full", "compression": True, "encryption": False, "retentionDays": 30}
        | options,
        "excludes": excludes,
    }


class FakeBackApp:
    def __init__(
        self, configs: list[dict[str, Any]] | None = None, *, part_size: int = 16 << 20
    ) -> None:
        self.configs = configs or []
        self.part_size = part_size
        self.logs: dict[str, FakeLog] = {}
        self.objects: dict[str, bytes] = {}
        self.agent_logs: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.requests: list[tuple[str, str]] = []
        self.api_keys_seen_by_storage: list[str | None] = []
        self.faults: Callable[[httpx.Request], httpx.Response | Exception | None] | None = None
        self.features: list[str] = []
        """What the heartbeat lists; ``backup-cancelled`` makes ``backup/complete`` take
        ``status: cancelled`` (an older server refuses it with a 400)."""
        self.heartbeat_bodies: list[dict[str, Any]] = []
        self.update: dict[str, Any] | None = None
        """The heartbeat's ``update`` (an agent build on offer); left out of the answer when
        ``None``, as an older server does."""
        self.downloads: dict[str, bytes] = {}
        """What storage serves to a GET, by path (e.g. an offered build)."""
        self._lock = threading.Lock()

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- dispatch -----------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append((request.method, request.url.path))
        if self.faults is not None:
            fault = self.faults(request)
            if isinstance(fault, Exception):
                raise fault
            if fault is not None:
                return fault
        if request.url.host == STORAGE_HOST:
            self.api_keys_seen_by_storage.append(request.headers.get("x-agent-api-key"))
            return self._storage(request)
        if request.headers.get("x-agent-api-key") != API_KEY:
            return _error(401, "unauthorized", "missing or unknown API key")
        route = (request.method, request.url.path)
        body = json.loads(request.content) if request.content else {}
        with self._lock:
            if route == ("POST", "/api/agent/heartbeat"):
                self.heartbeats += 1
                self.heartbeat_bodies.append(body)
                answer = {"status": "online", "pollInterval": 30, "features": self.features}
                return _ok(answer if self.update is None else {**answer, "update": self.update})
            if route == ("GET", "/api/agent/configs"):
                return _ok({"configs": self.configs})
            if route == ("POST", "/api/agent/backup/start"):
                return self._start(body)
            if route == ("POST", "/api/agent/backup/upload/part"):
                return self._part(body)
            if route == ("POST", "/api/agent/backup/upload/complete"):
                return self._complete_upload(body)
            if route == ("POST", "/api/agent/backup/upload/abort"):
                return self._abort(body)
            if route == ("POST", "/api/agent/backup/complete"):
                return self._complete(body)
            if route == ("POST", "/api/agent/log"):
                self.agent_logs.append(body)
                return _ok({}, 201)
            # The run lease and live progress (always granted here; see ``test_scheduler``'s
            # ``LeasingBackApp`` for leases that conflict and expire).
            if route in (("POST", "/api/agent/lease"), ("POST", "/api/agent/lease/renew")):
                lease = {"token": "fake-lease", "expiresAt": "2099-01-01T00:00:00Z"}
                return _ok({"lease": lease})
            if route in (
                ("POST", "/api/agent/lease/release"),
                ("POST", "/api/agent/backup/progress"),
            ):
                return _ok({})
        return _error(404, "not_found", "no such endpoint")

    # -- endpoints ----------------------------------------------------------------------------------

    def _start(self, body: dict[str, Any]) -> httpx.Response:
        filename = body.get("filename", "")
        if not FILENAME.match(filename) or ".." in filename:
            return _error(
                400, "bad_request", "filename: only letters, digits, '.', '_' and '-' are allowed"
            )
        if body.get("configId") not in {c["id"] for c in self.configs}:
            return _error(404, "not_found", "no such config")
        if not isinstance(body.get("filesize"), int):
            return _error(400, "bad_request", "filesize: required integer")
        s3_path = f"users/u1/agents/a1/configs/{body['configId']}/{filename}"
        if s3_path in self.objects or any(log.s3_path == s3_path for log in self.logs.values()):
            return _error(409, "conflict", "the object key already holds a backup")
        log = FakeLog(
            str(uuid.uuid4()),
            body["configId"],
            s3_path,
            multipart=bool(body.get("multipart")),
            declared_size=body.get("size"),
            declared_sha256=body.get("sha256"),
        )
        self.logs[log.id] = log
        if log.multipart:
            upload = {
                "method": "MULTIPART",
                "uploadId": f"up-{log.id}",
                "partSize": self.part_size,
                "maxParts": 10000,
                "expiresAt": "2030-01-01T00:00:00Z",
                "s3Path": s3_path,
                "url": None,
                "headers": {},
            }
        else:
            headers = {}
            if log.declared_sha256:
                headers["x-amz-checksum-sha256"] = _b64(log.declared_sha256)
            upload = {  # the real server sends its unused optional fields as null
                "url": f"https://{STORAGE_HOST}/bucket/{s3_path}?X-Amz-Signature=sig-{log.id}",
                "method": "PUT",
                "headers": headers,
                "expiresAt": "2030-01-01T00:00:00Z",
                "s3Path": s3_path,
                "uploadId": None,
                "partSize": None,
                "maxParts": None,
            }
        return _ok({"logId": log.id, "upload": upload})

    def _part(self, body: dict[str, Any]) -> httpx.Response:
        log = self.logs.get(body.get("logId", ""))
        if log is None or not log.multipart:
            return _error(404, "not_found", "no such upload")
        n = body.get("partNumber")
        if not isinstance(n, int) or not 1 <= n <= 10000:
            return _error(400, "bad_request", "partNumber: 1-10000")
        url = (
            f"https://{STORAGE_HOST}/bucket/{log.s3_path}?partNumber={n}&uploadId=up-{log.id}"
            f"&X-Amz-Signature=sig-{log.id}-{n}&size={body['size']}&sha={body['sha256']}"
        )
        return _ok(
            {
                "part": {
                    "partNumber": n,
                    "url": url,
                    "method": "PUT",
                    "headers": {
                        "x-amz-checksum-sha256": _b64(body["sha256"]),
                        "content-length": str(body["size"]),
                    },
                    "expiresAt": "2030-01-01T00:00:00Z",
                }
            }
        )

    def _complete_upload(self, body: dict[str, Any]) -> httpx.Response:
        log = self.logs.get(body.get("logId", ""))
        if log is None:
            return _error(404, "not_found", "no such upload")
        if log.s3_path in self.objects:
            return _ok({"size": len(self.objects[log.s3_path])})
        numbers = [p["partNumber"] for p in body.get("parts", [])]
        if numbers != list(range(1, len(numbers) + 1)) or any(n not in log.parts for n in numbers):
            return _error(400, "bad_request", f"parts: missing or out of order {numbers}")
        for p in body["parts"]:
            if p["etag"] != _etag(log.parts[p["partNumber"]]):
                return _error(400, "bad_request", f"part {p['partNumber']}: wrong etag")
        self.objects[log.s3_path] = b"".join(log.parts[n] for n in numbers)
        log.parts.clear()
        return _ok({"size": len(self.objects[log.s3_path])})

    def _abort(self, body: dict[str, Any]) -> httpx.Response:
        log = self.logs.get(body.get("logId", ""))
        if log is None:
            return _error(404, "not_found", "no such upload")
        log.parts.clear()
        if log.status == "running":
            log.status = "failed"
            log.error = body.get("reason")
        return _ok({})

    def _complete(self, body: dict[str, Any]) -> httpx.Response:
        log = self.logs.get(body.get("logId", ""))
        if log is None:
            return _error(404, "not_found", "no such log")
        status = body.get("status")
        known = (
            ("completed", "failed", "cancelled")
            if "backup-cancelled" in self.features
            else (
                "completed",
                "failed",
            )
        )
        if status not in known:
            return _error(400, "bad_request", f"status: one of {', '.join(known)}")
        for key in ("filesProcessed", "bytesTransferred", "duration", "errors"):
            if key not in body:
                return _error(400, "bad_request", f"{key}: required")
        if log.status != "running":
            if log.status == status:
                return _ok({"status": log.status})
            return _error(409, "conflict", f"the log is already {log.status}")
        log.complete = body
        if status in ("failed", "cancelled"):
            log.status, log.error = status, body.get("error")
            log.parts.clear()
            return _ok({"status": status})
        data = self.objects.get(log.s3_path)
        size = body.get("size", body.get("bytesTransferred"))
        reason = None
        if data is None:
            reason = "the object does not exist"
        elif len(data) != size:
            reason = f"size mismatch: stored {len(data)}, reported {size}"
        elif body.get("sha256") and hashlib.sha256(data).hexdigest() != body["sha256"]:
            reason = "sha256 mismatch"
        if reason:
            log.status, log.error = "failed", reason
            return _error(409, "conflict", reason)
        log.status = "completed"
        return _ok({"status": "completed"})

    # -- storage ------------------------------------------------------------------------------------

    def _storage(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path in self.downloads:
            return httpx.Response(200, content=self.downloads[request.url.path])
        if request.method != "PUT":
            return httpx.Response(405)
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        key = request.url.path.removeprefix("/bucket/")
        data = request.content
        with self._lock:
            log = next((lg for lg in self.logs.values() if lg.s3_path == key), None)
            if log is None or log.status != "running":
                return _s3_error(403, "AccessDenied")
            checksum = request.headers.get("x-amz-checksum-sha256")
            if checksum is not None and checksum != _b64(hashlib.sha256(data).hexdigest()):
                return _s3_error(400, "BadDigest")
            if "partNumber" in query:
                if query.get("X-Amz-Signature") != f"sig-{log.id}-{query['partNumber']}":
                    return _s3_error(403, "SignatureDoesNotMatch")
                if int(query["size"]) != len(data):
                    return _s3_error(403, "SignatureDoesNotMatch")
                log.parts[int(query["partNumber"])] = data
                return httpx.Response(200, headers={"ETag": _etag(data)})
            if query.get("X-Amz-Signature") != f"sig-{log.id}":
                return _s3_error(403, "SignatureDoesNotMatch")
            if log.declared_size is not None and log.declared_size != len(data):
                return _s3_error(403, "SignatureDoesNotMatch")
            if key in self.objects:
                return _s3_error(412, "PreconditionFailed")
            self.objects[key] = data
            return httpx.Response(200, headers={"ETag": _etag(data)})

    # -- helpers for tests --------------------------------------------------------------------------

    def only_object(self) -> bytes:
        assert len(self.objects) == 1, list(self.objects)
        return next(iter(self.objects.values()))

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r == (method, path))


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _ok(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, **body})


def _error(status: int, error: str, detail: str) -> httpx.Response:
    return httpx.Response(
        status, json={"success": False, "status": status, "error": error, "detail": detail}
    )


def _s3_error(status: int, code: str) -> httpx.Response:
    return httpx.Response(
        status, content=f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()
    )


# -- the engine against the fake, on a clock under the test's control ------------------------------

T0 = datetime(2025, 1, 6, 12, 0, 0, tzinfo=UTC)  # a Monday, 13:00 in Paris


class Clock:
    """Wall and monotonic time under the test's control. ``advance`` moves both (the agent was
    running); ``sleep`` moves only the wall clock (the machine was suspended)."""

    def __init__(self, start: datetime = T0) -> None:
        self.wall = start
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, **delta: float) -> None:
        step = timedelta(**delta)
        self.wall += step
        self.mono += step.total_seconds()

    def sleep(self, **delta: float) -> None:
        self.wall += timedelta(**delta)


class LeasingBackApp(FakeBackApp):
    """``fakes.FakeBackApp`` plus the lease, progress and heartbeat extensions, on a fake clock.
    Leases expire: a holder that stops renewing loses it at ``expiresAt``."""

    def __init__(self, configs: list[dict[str, Any]], clock: Clock) -> None:
        super().__init__(configs)
        self.clock = clock
        self.leases: dict[str, tuple[str, str, datetime]] = {}  # config -> holder, token, expiry
        self.holder = "this agent"
        self.starts: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self.lease_calls: list[tuple[str, str]] = []
        self.run_requests: list[dict[str, Any]] = []
        self.heartbeat_bodies: list[dict[str, Any]] = []
        self.renew_conflict = False
        self.compact: dict[str, Any] | None = None
        """The heartbeat's ``compact`` (the server asks the agent to compact)."""
        self.beat_extra: dict[str, Any] = {}
        """More fields of the heartbeat's answer (``parallelBackups``, ``limits``)."""
        self._n = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == STORAGE_HOST:
            return super().handle(request)
        body = json.loads(request.content) if request.content else {}
        now = self.clock.now()
        if path == "/api/agent/backup/start":
            self.starts.append(body)
        if path == "/api/agent/heartbeat":
            self.heartbeat_bodies.append(body)
            if body.get("timezone") == "Mars/Olympus":
                return _error(400, "bad_request", "timezone: 'Mars/Olympus' is not an IANA name")
            self.heartbeats += 1
            return _ok(
                {
                    "status": "online",
                    "pollInterval": 30,
                    "runRequests": self.run_requests,
                    "features": self.features,
                    "compact": self.compact,
                    **self.beat_extra,
                }
            )
        if path == "/api/agent/backup/progress":
            self.progress.append(body)
            return _ok({})
        if path.startswith("/api/agent/lease"):
            config_id = body["configId"]
            self.lease_calls.append((path.rsplit("/", 1)[-1], config_id))
            held = self.leases.get(config_id)
            ttl = timedelta(seconds=body.get("ttlSeconds", 300))
            if path == "/api/agent/lease":
                if held is not None and held[0] != self.holder and held[2] > now:
                    return _error(
                        409,
                        "conflict",
                        f"config is already running on {held[0]} until {held[2]:%H:%M:%S}Z",
                    )
                self._n += 1
                self.leases[config_id] = (self.holder, f"t{self._n}", now + ttl)
            elif path == "/api/agent/lease/renew":
                if (
                    self.renew_conflict
                    or held is None
                    or held[1] != body["token"]
                    or (held[2] <= now and held[0] != self.holder)
                ):
                    return _error(409, "conflict", "the lease was lost")
                self.leases[config_id] = (held[0], held[1], now + ttl)
            else:
                if held is not None and held[1] == body["token"]:
                    del self.leases[config_id]
                return _ok({})
            holder, token, expiry = self.leases[config_id]
            return _ok({"lease": {"token": token, "expiresAt": f"{expiry:%Y-%m-%dT%H:%M:%S}Z"}})
        return super().handle(request)


def plane_for(fake: FakeBackApp) -> ApiClient:
    return ApiClient(
        "https://backapp.test",
        API_KEY,
        transport=fake.transport,
        sleep=lambda s: None,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
    )


def engine_factory(fake: FakeBackApp, tmp_path: Path, clock: Clock | None = None) -> Any:
    def make(plane: ControlPlane, events: EventSink) -> BackupEngine:
        return BackupEngine(
            plane,
            HttpStorage(transport=fake.transport),
            EngineOptions(temp_dir=tmp_path / "agent-tmp"),
            events=events,
            now=clock.now if clock else lambda: datetime.now(UTC),
        )

    return make


def make_scheduler(clock: Clock, tmp_path: Path, tz: str | None = "Europe/Paris") -> Scheduler:
    """A scheduler on ``clock`` whose store lives in ``tmp_path / "agent"``."""
    return Scheduler(
        ScheduleStore(tmp_path / "agent"), tz, now=clock.now, monotonic=clock.monotonic
    )


FAKE_SERVER = "https://backapp.test"
"""The address the in-process agent command line is configured with (its client gets the fake's
transport, whatever the address)."""


def configure(monkeypatch: Any, key: str = API_KEY, *extra: str) -> int:
    """``backapp-agent configure --api-key-stdin`` in-process, against the fake (``monkeypatch``:
    pytest's, for the standard input)."""
    import io

    from desktop_agent import cli

    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    return cli.main(["configure", "--server", FAKE_SERVER + "/", "--api-key-stdin", *extra])
