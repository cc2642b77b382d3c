"""Delivering alerts: e-mail through SMTP and a JSON POST to a webhook.

Both are bounded by ``BACKAPP_NOTIFY_TIMEOUT`` so a dead mail server or receiver never stalls the
server's periodic loop; a failure raises :class:`NotifyError` and the caller retries next round.
smtplib is blocking, so it runs in a worker thread.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import anyio.to_thread
import httpx

from backend import __version__
from backend.settings import Settings

__all__ = ["Notifier", "NotifyError"]


class NotifyError(Exception):
    """A delivery failed; the message says which channel and why."""


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def email_enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    @property
    def webhook_enabled(self) -> bool:
        return bool(self.settings.alert_webhook_url)

    async def send_email(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await anyio.to_thread.run_sync(self._send_sync, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"e-mail to {to} failed: {type(exc).__name__}: {exc}") from exc

    def _send_sync(self, message: EmailMessage) -> None:
        s = self.settings
        assert s.smtp_host is not None
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.notify_timeout) as smtp:
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
            smtp.send_message(message)

    async def post_webhook(self, payload: dict[str, Any]) -> None:
        url = self.settings.alert_webhook_url
        assert url is not None
        try:
            async with httpx.AsyncClient(
                timeout=self.settings.notify_timeout, follow_redirects=False
            ) as client:
                response = await client.post(
                    url, json=payload, headers={"User-Agent": f"backapp/{__version__}"}
                )
        except httpx.HTTPError as exc:
            raise NotifyError(f"webhook failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise NotifyError(f"webhook answered {response.status_code}")
