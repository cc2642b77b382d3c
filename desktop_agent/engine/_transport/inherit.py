"""The agent API's calls for reading other machines' backups (docs/agent-api.md, "Extensions:
recovery keys"): the machines this agent replaces, continuing one's repository, and an
administrator's organisation recovery. A mixin of ``ApiClient``, kept apart so that the client
module stays readable."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .._errors import ApiError
from .._recovery.account import Continued, InheritedAgent, OrganisationSnapshotKey
from ..protocol import RestoreTicket

__all__ = ["InheritanceCalls"]

T = TypeVar("T")


def _parsed(path: str, parse: Callable[[Any], T], body: Any) -> T:
    try:
        return parse(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc


class InheritanceCalls:
    """``repo_continue``, ``inherited_agents`` and the organisation calls over the client's
    ``_call``."""

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

    def organisation_key_put(self, wrapped: bytes, version: int) -> None:
        """Store this agent's repository key wrapped for the organisation key."""
        self._call(
            "PUT",
            "/api/agent/repo/organisation-key",
            {"wrappedKey": base64.b64encode(wrapped).decode(), "version": version},
        )

    def organisation_restore_ticket(self, backup_id: str) -> RestoreTicket:
        """An administrator's agent: a pre-signed GET of any encrypted archive of the server
        (``POST /api/agent/organisation/restore``), to open with the organisation code."""
        path = "/api/agent/organisation/restore"
        body = self._call("POST", path, {"backupId": backup_id})
        try:
            return msgspec.convert(body.get("restore"), RestoreTicket)
        except msgspec.ValidationError as exc:
            raise ApiError(200, "bad_response", f"unexpected answer: {exc}", path=path) from exc

    def organisation_snapshot(self, backup_id: str) -> OrganisationSnapshotKey:
        """An administrator's agent: the organisation-wrapped key of the repository holding
        snapshot ``backup_id`` of any account (``POST /api/agent/organisation/snapshot``; the
        server records it in the log of the machine that made it)."""
        path = "/api/agent/organisation/snapshot"
        got = self._call("POST", path, {"backupId": backup_id})
        return _parsed(path, OrganisationSnapshotKey.of, got)
