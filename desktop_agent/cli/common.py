"""What the ``backapp-agent`` commands share: exit statuses, error messages, logging, the stored API
key, and the Ctrl-C handling."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeAlias

from desktop_agent.engine import ConfigurationError

if TYPE_CHECKING:  # the key store and the HTTP client load when a command needs them
    from desktop_agent.engine import AgentSettings, ApiClient, CancelToken

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FILE_ERRORS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("backapp-agent")


def verbosity(args: argparse.Namespace) -> int:
    """How many ``-v`` were given, before the command's name and after it (a sub-command's parser
    fills its own namespace, so the two counts are kept apart and added here)."""
    return int(getattr(args, "verbose", 0) or 0) + int(getattr(args, "command_verbose", 0) or 0)


def err(message: str) -> None:
    """``message`` on stderr, after the program's name."""
    print(f"backapp-agent: {message}", file=sys.stderr)


def read_code_from_stdin() -> str | None:
    """One line of standard input, stripped; ``None`` (and a message) when there is none."""
    line = sys.stdin.readline().strip()
    if not line:
        err("no recovery code on standard input")
        return None
    return line


def setup_logging(verbosity: int) -> None:
    """Warnings by default, ``-v`` info, ``-vv`` debug (with the HTTP libraries' own); never a key
    or a pre-signed URL's signature in the log."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from desktop_agent.engine import install_log_redaction

    install_log_redaction()
    if verbosity < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)


def account(server_url: str) -> str:
    """The key store's account name for a server."""
    return server_url.rstrip("/")


def load_key(settings: AgentSettings) -> str:
    """The stored API key for the configured server; ``ConfigurationError`` if there is none."""
    if not settings.server_url:
        raise ConfigurationError("not configured: run `backapp-agent configure --server URL` first")
    from desktop_agent.engine import KeyStore, config_dir

    found = KeyStore(config_dir()).load(account(settings.server_url))
    if found is None:
        raise ConfigurationError("no API key stored: run `backapp-agent configure` first")
    return found[0]


def connect(settings: AgentSettings) -> ApiClient:
    """A client of the configured server, with the stored key."""
    from desktop_agent.engine import ApiClient

    key = load_key(settings)
    assert settings.server_url
    return ApiClient(settings.server_url, key)


Handler: TypeAlias = Callable[[int, FrameType | None], None]


@contextmanager
def signal_handlers(handler: Handler) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM (where there is one) while the block runs."""
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def cancel_on_signals(cancel: CancelToken) -> Handler:
    """First Ctrl-C (or SIGTERM): cancel cleanly (abort the upload, mark the log failed); second:
    quit at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.cancel("cancelled by the user" if signum == signal.SIGINT else "agent terminated")
        print("\nbackapp-agent: stopping (press Ctrl-C again to quit at once)...", file=sys.stderr)

    return handler
