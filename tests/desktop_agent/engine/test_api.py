"""The HTTP client against httpx.MockTransport: headers, retries with backoff, Retry-After, no retry on
client errors, and nothing secret in errors or logs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from desktop_agent.engine import (
    ApiClient,
    ApiError,
    AuthenticationError,
    ConflictError,
    HttpStorage,
    NetworkError,
    NotFoundError,
    RetryPolicy,
    StorageError,
    install_log_redaction,
)
from desktop_agent.engine.protocol import (
    AbortUpload,
    CompleteBackup,
    CompleteUpload,
    SignPart,
    StartBackup,
    UploadedPart,
)

KEY = "bka_secret-key-value"
SIGNED = "https://s3.test/bucket/key.tar.gz?X-Amz-Signature=topsecret&X-Amz-Credential=AKIA"


def client(handler, **kw) -> tuple[ApiClient, list[float]]:  # type: ignore[no-untyped-def]
    sleeps: list[float] = []
    c = ApiClient(
        "https://backapp.test/",
        KEY,
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        rand=lambda: 1.0,
        **kw,
    )
    return c, sleeps


def test_sends_the_key_and_the_spec_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True, "status": "online", "pollInterval": 30})

    c, _ = client(handler)
    beat = c.heartbeat(version="0.1.0", platform="darwin")
    assert beat.status == "online" and beat.poll_interval == 30
    [request] = seen
    assert request.url == "https://backapp.test/api/agent/heartbeat"
    assert request.headers["X-Agent-API-Key"] == KEY
    assert request.read() == b'{"version":"0.1.0","platform":"darwin"}'


def test_start_backup_payload_and_response() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(
            200,
            json={
                "success": True,
                "logId": "log-1",
                "upload": {
                    "method": "MULTIPART",
                    "uploadId": "u",
                    "partSize": 16777216,
                    "maxParts": 10000,
                    "expiresAt": "2025-01-07T15:00:00Z",
                    "s3Path": "users/u/agents/a/configs/c/f.tar.gz",
                },
            },
        )

    c, _ = client(handler)
    got = c.start_backup(
        StartBackup(config_id="c", filename="f.tar.gz", filesize=10, multipart=True)
    )
    assert bodies == [b'{"configId":"c","filename":"f.tar.gz","filesize":10,"multipart":true}']
    assert got.log_id == "log-1" and got.upload.part_size == 16777216 and got.upload.url is None


SHA = "ab" * 32


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        (
            lambda c: c.start_backup(StartBackup(config_id="c1", filename="f.tar.gz", filesize=10)),
            "/api/agent/backup/start",
            b'{"configId":"c1","filename":"f.tar.gz","filesize":10,"multipart":false}',
        ),
        (
            lambda c: c.start_backup(
                StartBackup(
                    config_id="c1",
                    filename="f.tar.gz",
                    filesize=10,
                    size=10,
                    sha256=SHA,
                    trigger="schedule",
                    attempt=2,
                    max_attempts=3,
                    run_request_id="r1",
                    part_checksum="crc32",
                )
            ),
            "/api/agent/backup/start",
            b'{"configId":"c1","filename":"f.tar.gz","filesize":10,"multipart":false,"size":10,'
            b'"sha256":"' + SHA.encode() + b'","trigger":"schedule","attempt":2,"maxAttempts":3,'
            b'"runRequestId":"r1","partChecksum":"crc32"}',
        ),
        (
            lambda c: c.part_url(SignPart(log_id="l", part_number=3, size=7, sha256="cd" * 32)),
            "/api/agent/backup/upload/part",
            b'{"logId":"l","partNumber":3,"size":7,"sha256":"' + b"cd" * 32 + b'"}',
        ),
        (
            lambda c: c.part_url(SignPart(log_id="l", part_number=4, size=7, crc32="NhCmhg==")),
            "/api/agent/backup/upload/part",
            b'{"logId":"l","partNumber":4,"size":7,"crc32":"NhCmhg=="}',
        ),
        (
            lambda c: c.part_url(SignPart(log_id="l", part_number=5, size=7)),
            "/api/agent/backup/upload/part",
            b'{"logId":"l","partNumber":5,"size":7,"sha256":null}',
        ),
        (
            lambda c: c.complete_upload(
                CompleteUpload(
                    log_id="l",
                    parts=[
                        UploadedPart(part_number=1, etag='"e1"', sha256=SHA),
                        UploadedPart(part_number=2, etag='"e2"', crc32="NhCmhg=="),
                    ],
                )
            ),
            "/api/agent/backup/upload/complete",
            b'{"logId":"l","parts":[{"partNumber":1,"etag":"\\"e1\\"","sha256":"'
            + SHA.encode()
            + b'"},{"partNumber":2,"etag":"\\"e2\\"","crc32":"NhCmhg=="}]}',
        ),
        (
            lambda c: c.abort_upload(AbortUpload(log_id="l", reason="cancelled by the user")),
            "/api/agent/backup/upload/abort",
            b'{"logId":"l","reason":"cancelled by the user"}',
        ),
        (
            lambda c: c.complete_backup(
                CompleteBackup(
                    log_id="l",
                    status="completed",
                    files_processed=3,
                    bytes_transferred=10,
                    duration_ms=1500,
                    errors=[{"path": "/a", "message": "gone"}],
                    size=10,
                    sha256=SHA,
                )
            ),
            "/api/agent/backup/complete",
            b'{"logId":"l","status":"completed","filesProcessed":3,"bytesTransferred":10,'
            b'"duration":1500,"errors":[{"path":"/a","message":"gone"}],"size":10,"sha256":"'
            + SHA.encode()
            + b'"}',
        ),
        (
            lambda c: c.complete_backup(
                CompleteBackup(
                    log_id="l",
                    status="failed",
                    files_processed=0,
                    bytes_transferred=0,
                    duration_ms=0,
                    error="refused: x",
                )
            ),
            "/api/agent/backup/complete",
            b'{"logId":"l","status":"failed","filesProcessed":0,"bytesTransferred":0,"duration":0,'
            b'"errors":[],"error":"refused: x"}',
        ),
    ],
)
def test_each_message_goes_out_as_the_agent_api_reads_it(
    call: Callable[[ApiClient], object], path: str, body: bytes
) -> None:
    """The wire JSON of every backup call, byte for byte (what the agent sent before its calls
    became messages: the server and the contract read exactly this)."""
    sent: list[tuple[str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, request.read()))
        return httpx.Response(
            200,
            json={
                "logId": "l",
                "upload": {"method": "PUT", "url": "https://s/x"},
                "part": {"partNumber": 1, "url": "https://s/1"},
                "size": 10,
                "status": "completed",
            },
        )

    c, _ = client(handler)
    call(c)
    assert sent == [(path, body)]


def test_retries_transient_errors_with_backoff() -> None:
    answers = [
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.ReadTimeout("slow"),
        httpx.Response(502),
        httpx.Response(200, json={"success": True, "configs": []}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    c, sleeps = client(handler)
    assert c.list_configs() == []
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # exponential; jitter pinned by rand=1.0


def test_honours_retry_after_on_429() -> None:
    answers = [
        httpx.Response(
            429, headers={"Retry-After": "7"}, json={"success": False, "error": "rate_limited"}
        ),
        httpx.Response(201, json={"success": True}),
    ]
    c, sleeps = client(lambda request: answers.pop(0))
    c.send_log("info", "hello")
    assert sleeps == [7.0]


def test_gives_up_after_max_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    c, sleeps = client(handler, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(
        NetworkError, match="could not reach the BackApp server at https://backapp.test"
    ):
        c.heartbeat(version="1", platform="linux")
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, ApiError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (500, ApiError),
    ],
)
def test_never_retries_client_errors(status: int, error_type: type[ApiError]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            status,
            json={
                "success": False,
                "status": status,
                "error": "bad_request",
                "detail": "filename: bad",
            },
        )

    c, sleeps = client(handler)
    with pytest.raises(error_type) as info:
        c.start_backup(StartBackup(config_id="c", filename="../x", filesize=1))
    assert len(calls) == 1 and sleeps == []
    assert info.value.status == status and info.value.detail.startswith("filename: bad")
    assert KEY not in str(info.value)


def test_storage_put_sends_signed_headers_but_never_the_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"ETag": '"abc"'})

    storage = HttpStorage(transport=httpx.MockTransport(handler))
    etag = storage.put(SIGNED, b"data", {"x-amz-checksum-sha256": "c2hh", "content-length": "4"})
    assert etag == '"abc"'
    [request] = seen
    assert request.headers["x-amz-checksum-sha256"] == "c2hh"
    assert "x-agent-api-key" not in request.headers
    assert request.read() == b"data"


@pytest.mark.parametrize(
    ("answer", "transient"),
    [
        (httpx.Response(503), True),
        (httpx.Response(403, content=b"<Error><Code>AccessDenied</Code></Error>"), True),
        (httpx.Response(400, content=b"<Error><Code>BadDigest</Code></Error>"), False),
        (httpx.ConnectError("refused"), True),
    ],
)
def test_storage_errors_are_classified_and_redacted(answer: object, transient: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    storage = HttpStorage(transport=httpx.MockTransport(handler))
    with pytest.raises(StorageError) as info:
        storage.put(SIGNED, b"x", {})
    assert info.value.transient is transient
    assert "https://s3.test/bucket/key.tar.gz" in str(info.value)
    assert "topsecret" not in str(info.value) and "AKIA" not in str(info.value)


def test_log_redaction_hides_presigned_queries(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    storage = HttpStorage(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, headers={"ETag": "e"}))
    )
    with caplog.at_level(logging.DEBUG):
        storage.put(SIGNED, b"x", {})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "https://s3.test/bucket/key.tar.gz" in text
    assert "topsecret" not in text and "AKIA" not in text
