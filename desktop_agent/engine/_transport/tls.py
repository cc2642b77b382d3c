"""One verifying TLS context for the whole process.

Building a context loads the CA bundle, which costs a few hundred milliseconds on a slow machine,
and a command makes up to three httpx clients (agent API, storage, restore): they share this one.
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured as httpx honours them.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's verifying TLS context (made on first use)."""
    return httpx.create_ssl_context()
