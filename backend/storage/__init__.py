"""Object storage for backup archives: one protocol, an S3 backend and an embedded local backend.

    from backend.storage import S3Storage, LocalStorage, Storage

Services depend on :class:`Storage` only; ``create_app`` picks the backend from the settings and, for
the local one, mounts :func:`local_storage_handlers`. The exception tree is drawn in
:mod:`backend.storage.base`.
"""

from . import base
from .base import *  # noqa: F403  (every name of base.__all__, listed there once)
from .local import LocalStorage
from .local_routes import local_storage_handlers
from .s3 import S3Storage

__all__ = ["LocalStorage", "S3Storage", "local_storage_handlers"]
__all__ += base.__all__
