"""Pre-signed URLs stay out of logs and error messages: their query string *is* the credential."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["install_log_redaction", "redact_url"]


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
    """Make the ``httpx``/``httpcore`` loggers safe: their records never show a pre-signed URL's
    query string. Applications call this once (the engine does not touch logging at import)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrls) for f in logger.filters):
            logger.addFilter(_RedactUrls())
