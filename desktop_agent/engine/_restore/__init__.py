"""Restores: download one backup through a pre-signed GET, verify it, and extract it safely.

One module per concern:

- ``planning``: what to restore and where (``RestoreOptions``, ``PathFilter``, the tar-slip rules
  of ``check_member``, the default target's name); pure, no I/O.
- ``download``: getting the object (the ``RestoreSource`` seam, ``ResumableDownload``).
- ``verification``: is it the backup we stored (size and SHA-256, damaged archives).
- ``extraction``: writing it (the staging folder, safe writes, the move into place).
- ``archive``: a backup stored as one tar archive, read through the three above.
- ``restorer``: ``Restorer``, the façade that runs one restore and reports it.

Safety (tar-slip): members with absolute paths or ``..``, device files and FIFOs, hard links to
anything but a file already restored, and symbolic links that point outside the target are refused
and reported (``RestoreSkipped``); nothing is written through a symbolic link, and after extraction
every symbolic link is resolved on disk and removed if it leads outside the staging folder. An
in-place restore (``in_place=True``) writes to the members' original absolute paths: there the
"target" is ``/`` and links are kept as they were.
"""

from .download import RestoreSource
from .planning import (
    MemberInfo,
    PathFilter,
    RestoreOptions,
    check_member,
    default_target_name,
    member_path,
)
from .restorer import Restorer, RestoreResult

__all__ = [
    "MemberInfo",
    "PathFilter",
    "RestoreOptions",
    "RestoreResult",
    "RestoreSource",
    "Restorer",
    "check_member",
    "default_target_name",
    "member_path",
]
