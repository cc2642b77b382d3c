"""Tiny real receivers on loopback for alert deliveries: an SMTP server and a webhook endpoint.

Both run in a thread on 127.0.0.1 and a free port and keep what they receive. The SMTP server speaks
just enough of RFC 5321 for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT); it offers no
STARTTLS, so clients must be configured without it.
"""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["SmtpSink", "WebhookSink", "smtp_sink", "webhook_sink"]


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    fail: bool = False
    """When true, every transaction is refused with a 554 (to test retries)."""


class _SmtpHandler(socketserver.StreamRequestHandler):
    sink: SmtpSink

    def reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode("ascii"))
        self.wfile.flush()

    def handle(self) -> None:
        sink = self.server.sink  # type: ignore[attr-defined]
        self.reply("220 test-smtp ready")
        sender, recipients = "", list[str]()
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-test-smtp\r\n250 8BITMIME\r\n")
                self.wfile.flush()
            elif verb == "HELO":
                self.reply("250 test-smtp")
            elif verb == "MAIL":
                if sink.fail:
                    self.reply("554 refused for the test")
                    continue
                sender = line.split(":", 1)[1].strip().strip("<>").split(">")[0]
                recipients = []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines: list[bytes] = []
                while True:
                    data = self.rfile.readline()
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    lines.append(data[1:] if data.startswith(b"..") else data)
                message = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                sink.messages.append(Received(sender, recipients, message))  # type: ignore[arg-type]
                self.reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class _ThreadedTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    server = _ThreadedTCP(("127.0.0.1", 0), _SmtpHandler)
    sink = SmtpSink("127.0.0.1", int(server.server_address[1]))
    server.sink = sink  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class WebhookSink:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    """What the receiver answers (set to 500 to test retries)."""


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        sink: WebhookSink = self.server.sink  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if sink.status < 300:
            sink.posts.append(
                {"json": json.loads(body), "content_type": self.headers.get("content-type")}
            )
        self.send_response(sink.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebhookHandler)
    server.daemon_threads = True
    sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/hook")
    server.sink = sink  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
