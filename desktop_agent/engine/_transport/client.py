"""``ApiClient``: the BackApp agent API (``docs/agent-api.md``) over httpx, with retries on transient
failures; the server's JSON answers decoded into the types of ``protocol``, its errors into
``ApiError`` subclasses."""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx
import msgspec

from .._closing import Closing
from .._errors import ApiError, AuthenticationError, ConflictError, NetworkError, NotFoundError
from .._recovery.account import RecoveryInfo, WrappedRepoKey
from ..protocol import (
    AbortUpload,
    AgentMode,
    BackupInfo,
    CompleteBackup,
    CompleteUpload,
    ConfigInfo,
    Heartbeat,
    Lease,
    PartTicket,
    RestoreJob,
    RestoreTicket,
    SignPart,
    StartBackup,
    StartResponse,
)
from ..repo_protocol import (
    CompleteSnapshot,
    ListedObject,
    MissingObjects,
    ObjectKind,
    ObjectUpload,
    ReadSlot,
    SnapshotStarted,
    StartSnapshot,
    UploadSlot,
    decode_bitmap,
    encode_bitmap,
)
from .bandwidth import apply_limits
from .inherit import InheritanceCalls
from .retry import RETRYABLE_EXCEPTIONS, RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from .tls import tls_context

__all__ = ["API_KEY_HEADER", "ApiClient"]

log = logging.getLogger("desktop_agent.engine.api")

API_KEY_HEADER = "X-Agent-API-Key"


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
    return cls(
        response.status_code,
        error,
        detail,
        path=path,
        body=body if isinstance(body, dict) else None,
    )


class ApiClient(InheritanceCalls, Closing):
    """The BackApp agent API over httpx, with retries on transient failures.

    Transient failures (connection errors, timeouts, 429 with ``Retry-After``, 502/503/504) are retried
    per ``retry``; other 4xx answers raise at once as ``ApiError`` subclasses. ``sleep`` and ``rand`` are
    injectable so tests run without waiting. ``mode`` (``daemon``, ``tray`` or ``oneshot``) goes with
    every heartbeat: it tells the server whether silence between heartbeats means the agent is
    offline or only between two runs (``backapp-agent run`` from cron).
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
        mode: AgentMode | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.mode = mode
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
            verify=tls_context(),
        )

    def close(self) -> None:
        self._http.close()

    # -- the spec's endpoints -----------------------------------------------------------------------

    def heartbeat(self, *, version: str, platform: str, timezone: str | None = None) -> Heartbeat:
        """``timezone`` (an IANA name) tells the server which zone the schedules run in."""
        path = "/api/agent/heartbeat"
        payload = {"version": version, "platform": platform}
        if self.mode is not None:
            payload["mode"] = self.mode
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
        apply_limits(beat)
        return beat

    def list_configs(self) -> list[ConfigInfo]:
        body = self._call("GET", "/api/agent/configs")
        return _decode(body.get("configs") or [], list[ConfigInfo], "/api/agent/configs")

    def start_backup(self, request: StartBackup) -> StartResponse:
        body = self._call("POST", "/api/agent/backup/start", request.to_json())
        return _decode(body, StartResponse, "/api/agent/backup/start")

    def complete_backup(self, request: CompleteBackup) -> str:
        body = self._call("POST", "/api/agent/backup/complete", request.to_json())
        return str(body.get("status", request.status))

    def send_log(self, level: str, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        message = message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        payload: dict[str, Any] = {"level": level, "message": message[:10_000]}
        if metadata:
            payload["metadata"] = dict(metadata)
        self._call("POST", "/api/agent/log", payload)

    # -- multipart extension ------------------------------------------------------------------------

    def part_url(self, request: SignPart) -> PartTicket:
        body = self._call("POST", "/api/agent/backup/upload/part", request.to_json())
        return _decode(body.get("part"), PartTicket, "/api/agent/backup/upload/part")

    def complete_upload(self, request: CompleteUpload) -> int:
        body = self._call("POST", "/api/agent/backup/upload/complete", request.to_json())
        size = body.get("size")
        return int(size) if isinstance(size, int) else -1

    def abort_upload(self, request: AbortUpload) -> None:
        self._call("POST", "/api/agent/backup/upload/abort", request.to_json())

    # -- schedules, leases, live progress extension ----------------------------------------------

    def acquire_lease(
        self,
        config_id: str,
        ttl_seconds: int,
        *,
        instance: str | None = None,
        take_over: Sequence[str] = (),
    ) -> Lease:
        """Take the config's run lease for this process (``instance``), taking it over from one of
        ``take_over`` (dead processes of this agent) that still holds it; ``ConflictError`` (409)
        when another runner holds it (its ``detail`` says who and until when)."""
        payload: dict[str, Any] = {"configId": config_id, "ttlSeconds": ttl_seconds}
        if instance is not None:
            payload["instance"] = instance
        if take_over:
            payload["takeOver"] = list(take_over)
        body = self._call("POST", "/api/agent/lease", payload)
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

    def list_backups(
        self, *, config_id: str | None = None, limit: int = 100, agent_id: str | None = None
    ) -> list[BackupInfo]:
        """The completed backups this agent may restore, newest first; with ``agent_id``, those
        made by an agent this one inherits (``NotFoundError`` for any other)."""
        params: dict[str, Any] = {"configId": config_id} if config_id else {}
        params["limit"] = limit
        if agent_id:
            params["agentId"] = agent_id
        path = "/api/agent/backups"
        body = self._call("GET", f"{path}?{urlencode(params)}")
        return _decode(body.get("backups") or [], list[BackupInfo], path)

    def backup(self, backup_id: str) -> BackupInfo:
        """One backup this agent may restore (type, maker); ``NotFoundError`` for any other."""
        path = f"/api/agent/backups/{quote(backup_id, safe='')}"
        body = self._call("GET", path)
        return _decode(body.get("backup"), BackupInfo, "/api/agent/backups/{id}")

    def restore_ticket(self, backup_id: str) -> RestoreTicket:
        """A fresh pre-signed GET for one backup's object, with its size and SHA-256."""
        body = self._call("POST", "/api/agent/restore", {"backupId": backup_id})
        return _decode(body.get("restore"), RestoreTicket, "/api/agent/restore")

    # -- restores asked for from the web console ----------------------------------------------------

    def start_restore_job(self, job_id: str) -> RestoreJob:
        """Take a pending restore (``ConflictError`` when it is taken, finished or expired)."""
        path = f"/api/agent/restores/{job_id}/start"
        return _decode(self._call("POST", path), RestoreJob, path)

    def restore_job_progress(self, job_id: str, *, files: int, bytes_written: int) -> None:
        self._call(
            "POST",
            f"/api/agent/restores/{job_id}/progress",
            {"files": files, "bytes": bytes_written},
        )

    def finish_restore_job(self, job_id: str, outcome: Mapping[str, Any]) -> None:
        """``outcome``: ``status`` (``completed`` or ``failed``), the counts, ``error``."""
        self._call("POST", f"/api/agent/restores/{job_id}/complete", dict(outcome))

    # -- snapshots extension ------------------------------------------------------------------------

    def snapshot_start(self, request: StartSnapshot) -> SnapshotStarted:
        path = "/api/agent/snapshot/start"
        payload: dict[str, Any] = {"configId": request.config_id, **dict(request.tags)}
        if request.lease_token is not None:
            payload["leaseToken"] = request.lease_token
        body = self._call("POST", path, payload)
        try:
            repo = body["repository"]
            parent = body.get("parent") or None
            lease = body.get("lease") or {}
            return SnapshotStarted(
                backup_id=str(body["backupId"]),
                agent_id=str(repo["agentId"]),
                initialized=bool(repo["initialized"]),
                pack_count=int(repo["packCount"]),
                live_packs=frozenset(
                    decode_bitmap(str(repo.get("livePacks") or ""), limit=int(repo["packCount"]))
                ),
                parent_id=str(parent["backupId"]) if parent else None,
                lease_token=lease.get("token"),
                lease_expires_at=lease.get("expiresAt"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc

    def snapshot_objects(self, backup_id: str, objects: Sequence[ObjectUpload]) -> list[UploadSlot]:
        path = "/api/agent/snapshot/objects"
        body = self._call(
            "POST",
            path,
            {
                "backupId": backup_id,
                "objects": [
                    {"kind": o.kind, "name": o.name, "size": o.size, "sha256": o.sha256}
                    for o in objects
                ],
            },
        )
        try:
            out = []
            for item in body["objects"]:
                upload = item.get("upload") or {}
                out.append(
                    UploadSlot(
                        kind=item["kind"],
                        name=str(item["name"]),
                        exists=bool(item["exists"]),
                        seq=None if item.get("seq") is None else int(item["seq"]),
                        url=upload.get("url"),
                        headers=dict(upload.get("headers") or {}),
                    )
                )
            return out
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc

    def snapshot_complete(self, request: CompleteSnapshot) -> str:
        payload = {
            "backupId": request.backup_id,
            "status": "completed",
            "filesProcessed": request.files,
            "size": request.size,
            "newBytes": request.new_bytes,
            "duration": request.duration_ms,
            "errors": [dict(e) for e in request.errors],
            "packs": encode_bitmap(request.packs),
            "indexes": list(request.indexes),
        }
        try:
            body = self._call("POST", "/api/agent/snapshot/complete", payload)
        except ConflictError as exc:
            missing = exc.body.get("missing")
            if isinstance(missing, list) and missing:
                raise MissingObjects(
                    exc.detail,
                    [
                        (str(m.get("kind")), str(m.get("name")))
                        for m in missing
                        if isinstance(m, dict)
                    ],
                ) from exc
            raise
        return str(body.get("status", "completed"))

    def snapshot_abort(self, backup_id: str, reason: str, *, cancelled: bool = False) -> None:
        self._call(
            "POST",
            "/api/agent/snapshot/abort",
            {"backupId": backup_id, "reason": reason[:4000], "cancelled": cancelled},
        )

    def repo_read(
        self,
        objects: Sequence[tuple[ObjectKind, str]],
        *,
        agent_id: str | None = None,
        organisation: bool = False,
    ) -> list[ReadSlot]:
        """GET URLs for objects of this agent's repository (or of ``agent_id``'s: inherited, or
        with ``organisation`` one an administrator reads for organisation recovery)."""
        path = f"/api/agent{'/organisation' if organisation else ''}/repo/read"
        payload: dict[str, Any] = {"objects": [{"kind": k, "name": n} for k, n in objects]}
        if agent_id:
            payload["agentId"] = agent_id
        body = self._call("POST", path, payload)
        try:
            return [
                ReadSlot(
                    kind=o["kind"], name=str(o["name"]), size=int(o["size"]), url=str(o["url"])
                )
                for o in body["objects"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc

    def repo_list(
        self,
        kind: ObjectKind,
        *,
        after: str | None = None,
        agent_id: str | None = None,
        organisation: bool = False,
    ) -> tuple[list[ListedObject], str | None]:
        path = f"/api/agent{'/organisation' if organisation else ''}/repo/objects"
        query: dict[str, Any] = {"kind": kind, "limit": 1000, **({"after": after} if after else {})}
        if agent_id:
            query["agentId"] = agent_id
        body = self._call("GET", f"{path}?{urlencode(query)}")
        try:
            page = [
                ListedObject(
                    name=str(o["name"]),
                    size=int(o["size"]),
                    seq=None if o.get("seq") is None else int(o["seq"]),
                )
                for o in body["objects"]
            ]
            nxt = body.get("next")
            return page, (str(nxt) if nxt else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc

    # -- checks and restore drills extension --------------------------------------------------------

    def report_check(self, payload: Mapping[str, Any]) -> None:
        """What ``backapp-agent check`` found (``POST /api/agent/repo/check``)."""
        self._call("POST", "/api/agent/repo/check", dict(payload))

    def compact_call(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/agent/repo/compact/{action}`` (start, objects, commit, abort)."""
        return self._call("POST", f"/api/agent/repo/compact/{action}", dict(payload))

    def report_drill(self, payload: Mapping[str, Any]) -> str:
        """One restore drill (``POST /api/agent/drill``); returns the server's summary of it."""
        body = self._call("POST", "/api/agent/drill", dict(payload))
        return str(body.get("summary", ""))

    # -- recovery keys (docs/agent-api.md, "Extensions: recovery keys") ----------------------------

    def recovery_state(self) -> RecoveryInfo:
        return _recovery_info(self._call("GET", "/api/agent/recovery"), "/api/agent/recovery")

    def recovery_setup(self, *, public_key: str, salt: str, kdf: str, proof: str) -> RecoveryInfo:
        path = "/api/agent/recovery"
        body = {"publicKey": public_key, "salt": salt, "kdf": kdf, "proof": proof}
        return _recovery_info(self._call("POST", path, body), path)

    def recovery_rotate(
        self,
        *,
        old_version: int,
        old_proof: str,
        public_key: str,
        salt: str,
        kdf: str,
        proof: str,
        keys: list[tuple[str, bytes]],
    ) -> RecoveryInfo:
        path = "/api/agent/recovery/rotate"
        body = {
            "oldVersion": old_version,
            "oldProof": old_proof,
            "publicKey": public_key,
            "salt": salt,
            "kdf": kdf,
            "proof": proof,
            "keys": [{"agentId": a, "wrappedKey": base64.b64encode(w).decode()} for a, w in keys],
        }
        return _recovery_info(self._call("POST", path, body), path)

    def recovery_keys(self) -> list[WrappedRepoKey]:
        path = "/api/agent/recovery/keys"
        body = self._call("GET", path)
        try:
            return [_wrapped(k, path) for k in body["keys"]]
        except (KeyError, TypeError) as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc

    def repo_key_put(self, wrapped: bytes, version: int) -> None:
        self._call(
            "PUT",
            "/api/agent/repo/key",
            {"wrappedKey": base64.b64encode(wrapped).decode(), "version": version},
        )

    def repo_key_get(self, agent_id: str | None = None) -> WrappedRepoKey:
        path = "/api/agent/repo/key"
        query = f"?{urlencode({'agentId': agent_id})}" if agent_id else ""
        return _wrapped(self._call("GET", path + query), path)

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
                        f"{type(exc).__name__}: {exc} (after {retry + 1} attempts)"
                    ) from exc
                delay = self.retry.delay(retry, self._rand)
                self._retry_said(
                    retry,
                    "%s %s failed (%s); retrying in %.1fs",
                    method,
                    path,
                    type(exc).__name__,
                    delay,
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
                self._retry_said(
                    retry,
                    "%s %s answered %d; retrying in %.1fs",
                    method,
                    path,
                    response.status_code,
                    delay,
                )
            self._sleep(delay)
            retry += 1

    @staticmethod
    def _retry_said(retry: int, message: str, *args: object) -> None:
        """A request's first retry is a warning, the next ones info (``-v``): a server that stays
        down is told once per request, and the error that ends it says how many attempts it took."""
        log.log(logging.WARNING if retry == 0 else logging.INFO, message, *args)

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


def _recovery_info(body: dict[str, Any], path: str) -> RecoveryInfo:
    return _decode(
        {
            "configured": body.get("configured"),
            "public_key": body.get("publicKey"),
            "salt": body.get("salt"),
            "kdf": body.get("kdf"),
            "version": body.get("version"),
            "agent_key_version": body.get("agentKeyVersion"),
            "organisation_key": body.get("organisationKey"),
            "organisation_version": body.get("organisationVersion"),
            "agent_organisation_key_version": body.get("agentOrganisationKeyVersion"),
        },
        RecoveryInfo,
        path,
    )


def _wrapped(body: Any, path: str) -> WrappedRepoKey:
    try:
        return WrappedRepoKey(
            agent_id=str(body["agentId"]),
            agent_name=str(body.get("agentName") or ""),
            wrapped=base64.b64decode(str(body["wrappedKey"]), validate=True),
            version=int(body["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc
