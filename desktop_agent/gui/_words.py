"""Failures in words for people, without Qt: no exception names, no error numbers, anywhere in the
tray app (the pairing window, the status window and menu, notifications, the restore window).

``in_words`` turns an exception into a sentence; ``failure_text`` does the same for a message that
arrives as text (an engine event's reason, a worker's failure, ``state.json``'s last error).
"""

from __future__ import annotations

import re

from desktop_agent.engine import AuthenticationError, NetworkError, NotFoundError

from ._text import redact

__all__ = ["failure_text", "in_words", "no_answer"]

_NOISE = re.compile(r"\b[A-Z]\w*(?:Error|Exception): |\[Errno -?\d+\] ")
# What the engine's HTTP client says when the server did not answer: "could not reach the BackApp
# server at URL (path): ConnectError: ..." or "request to URL/path failed: ...".
_UNREACHED = re.compile(
    r"(?:could not reach the BackApp server at |request to )(?P<url>https?://[^\s/()]+)\S* ?"
    r"(?:\(|failed: )"
)


def no_answer(server: str) -> str:
    """The words for a server that did not answer (lower case: they follow a colon)."""
    where = f" at {server}" if server else ""
    return f"the server did not answer{where}: check the network connection, then try again"


def failure_text(text: str) -> str:
    """A failure message in words (lower case first, as it arrives): the server not answering
    said so with its address; exception names and error numbers left out; API keys hidden.

    >>> failure_text("could not reach the BackApp server at http://h:9 (/api/x): "
    ...              "ConnectError: [Errno 111] Connection refused (after 2 attempts)")
    'the server did not answer at http://h:9: check the network connection, then try again'
    >>> failure_text("OSError: [Errno 28] No space left on device")
    'No space left on device'
    """
    unreached = _UNREACHED.search(text)
    if unreached is not None:
        return no_answer(unreached.group("url"))
    cleaned = _NOISE.sub("", redact(text)).strip()
    return cleaned or "something went wrong; try again"


def in_words(exc: BaseException, server: str = "") -> str:
    """Why something failed, as a sentence for people: no exception names, no error numbers.

    >>> in_words(NetworkError("could not reach it (/x): ConnectError: [Errno 111] Connection refused"), "https://b.example")
    'The server did not answer at https://b.example. Check the network connection, then try again.'
    >>> in_words(OSError(13, "Permission denied"))
    'Permission denied'
    """
    if isinstance(exc, NetworkError):
        found = _UNREACHED.search(str(exc))
        server = server or (found.group("url") if found else "")
        where = f" at {server}" if server else ""
        return f"The server did not answer{where}. Check the network connection, then try again."
    if isinstance(exc, AuthenticationError):
        return "The server did not accept this computer's key: pair it again in Settings."
    if isinstance(exc, NotFoundError):
        return "The server no longer has this backup (it may have expired)."
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc)
    text = _NOISE.sub("", redact(text)).strip()
    return (text[:1].upper() + text[1:]) if text else "Something went wrong; try again."
