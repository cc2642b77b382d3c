"""Secrets stay out of logs and error messages: pre-signed URLs (their query string *is* the
credential) and agent API keys (the ``X-Agent-API-Key`` header, which the WebSocket library prints
at debug level; a key in a query string, which a server's access line prints)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["install_log_redaction", "redact_secrets", "redact_url"]


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
    """Make logging safe: the ``httpx``/``httpcore`` loggers' records never show a pre-signed URL's
    query string, and no record of any logger, at any level, shows an agent key, a secret
    header's value or a URL signature. Applications (the agent's CLI and tray, the server) call
    this once (the engine does not touch logging at import); calling it again changes nothing."""
    _install_record_redaction()
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrls) for f in logger.filters):
            logger.addFilter(_RedactUrls())


REDACTED = "[redacted]"
_KEY = re.compile(r"bka_[A-Za-z0-9_\-]{4,}")
_HEADER = re.compile(
    r"""((?:x-agent-api-key|authorization|cookie)["']?\s*[:=,]\s*["']?)[^\s"',;)]+""",
    re.IGNORECASE,
)
_QUERY = re.compile(
    r"([?&](?:key|api_key|apikey|token|sig|signature|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-backapp-signature)=)[^&\s\"'#]+",
    re.IGNORECASE,
)
_PLAIN = (int, float, bool, type(None))


def redact_secrets(text: str) -> str:
    """``text`` with agent keys, secret headers' values and secret query parameters blanked.

    >>> redact_secrets('GET /api/agent/ws?key=bka_abc123 HTTP/1.1')
    'GET /api/agent/ws?key=[redacted] HTTP/1.1'
    >>> redact_secrets('< x-agent-api-key: bka_abc123')
    '< x-agent-api-key: [redacted]'
    """
    if "bka_" not in text and "=" not in text and ":" not in text:
        return text
    text = _KEY.sub("bka_" + REDACTED, text)
    text = _HEADER.sub(r"\g<1>" + REDACTED, text)
    return _QUERY.sub(r"\g<1>" + REDACTED, text)


def _redact_arg(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return redact_secrets(value)
    text = value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)
    cleaned = redact_secrets(text)
    # Other objects keep their type (a %d needs its int) unless their text held a secret.
    return value if cleaned == text else cleaned


def _redact_record(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        record.msg = redact_secrets(record.msg)
    elif record.msg is not None and not isinstance(record.msg, _PLAIN):
        text = str(record.msg)
        cleaned = redact_secrets(text)
        if cleaned != text:
            record.msg = cleaned
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(arg) for arg in record.args)
    elif isinstance(record.args, dict):
        record.args = {name: _redact_arg(arg) for name, arg in record.args.items()}


def _install_record_redaction() -> None:
    """Redact every log record this process makes from now on (idempotent)."""
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
    if getattr(previous, "_backapp_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory._backapp_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
