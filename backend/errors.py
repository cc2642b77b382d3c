"""Domain errors raised by services; one handler in ``backend.app`` maps them to HTTP responses.

    DomainError
     ├── InvalidInput        400  a value is wrong (``field`` names it)
     ├── NotAuthenticated    401  no/invalid session or API key
     ├── Forbidden           403  authenticated, but not allowed (CSRF, admin only, sign-up closed)
     ├── NotFound            404  does not exist for this caller (never reveals other users' ids)
     ├── Conflict            409  the state forbids it (key already used, log already finished)
 ├── UnsupportedMediaType 415 a body that is not JSON where JSON is required
     ├── RateLimited         429  too many attempts; ``retry_after`` seconds
     └── StorageUnavailable  503  object storage did not answer; safe to retry

Services raise these and never HTTP exceptions.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidInput",
    "NotAuthenticated",
    "NotFound",
    "RateLimited",
    "StorageUnavailable",
    "UnsupportedMediaType",
]


class DomainError(Exception):
    status_code = 400
    code = "error"

    def __init__(
        self, detail: str, *, field: str | None = None, extra: dict[str, object] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra
        """More of the error body than ``detail``, e.g. the ``missing`` objects of a snapshot."""


class InvalidInput(DomainError):
    status_code = 400
    code = "bad_request"


class NotAuthenticated(DomainError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(DomainError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)


class StorageUnavailable(DomainError):
    status_code = 503
    code = "storage_unavailable"
