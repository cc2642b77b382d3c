"""Which folders a server-side config may read: only under ``BACKAPP_SERVER_SOURCE_ROOTS``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from backend.errors import InvalidInput

__all__ = ["check_server_sources"]


def _under(path: str, roots: Sequence[str]) -> bool:
    for root in roots:
        try:
            if os.path.commonpath([path, root]) == root:
                return True
        except ValueError:
            continue
    return False


def check_server_sources(paths: Sequence[str], roots: Sequence[str], *, resolve: bool) -> None:
    """InvalidInput unless every path is absolute and under one of ``roots`` (after resolving
    symbolic links when ``resolve``; the roots are resolved the same way)."""
    if not roots:
        raise InvalidInput(
            "executionMode: server-side backups are disabled on this server "
            "(the administrator must set BACKAPP_SERVER_SOURCE_ROOTS)",
            field="executionMode",
        )
    real_roots = [os.path.realpath(r) for r in roots] if resolve else list(roots)
    for i, raw in enumerate(paths):
        if not os.path.isabs(raw):
            raise InvalidInput(
                f"sources[{i}].path: a server-side source must be an absolute path", field="sources"
            )
        path = os.path.realpath(raw) if resolve else os.path.normpath(raw)
        if not _under(path, real_roots):
            raise InvalidInput(
                f"sources[{i}].path: {raw} is outside the folders server-side backups may read "
                f"({', '.join(roots)})",
                field="sources",
            )
