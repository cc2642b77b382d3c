"""The agent API's calls for inheriting a machine (docs/agent-api.md, "Extensions: recovery
keys"): the machines this agent replaces, and continuing one's repository. A mixin of
``ApiClient``, kept apart so that the client module stays readable."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

from .._errors import ApiError
from .._recovery.account import Continued, InheritedAgent

__all__ = ["InheritanceCalls"]

T = TypeVar("T")


def _parsed(path: str, parse: Callable[[Any], T], body: Any) -> T:
    try:
        return parse(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc


class InheritanceCalls:
    """``repo_continue`` and ``inherited_agents`` over the client's ``_call``."""

    def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        raise NotImplementedError  # ApiClient's

    def repo_continue(
        self, *, from_agent_id: str, proof: str, wrapped: bytes, version: int
    ) -> Continued:
        """Take over the repository of a machine this one replaces (``/repo/continue``)."""
        body = {"fromAgentId": from_agent_id, "proof": proof, "version": version}
        body["wrappedKey"] = base64.b64encode(wrapped).decode()
        path = "/api/agent/repo/continue"
        return _parsed(path, Continued.of, self._call("POST", path, body))

    def inherited_agents(self) -> list[InheritedAgent]:
        """The machines this agent replaces (``GET /api/agent/inherited``)."""
        got = self._call("GET", "/api/agent/inherited")
        return _parsed("/api/agent/inherited", InheritedAgent.of_list, got)
