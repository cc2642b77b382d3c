"""Dependencies shared by the controllers: services, the signed-in user, the calling agent."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from backend.errors import Forbidden, NotAuthenticated
from backend.services import AgentIdentity, CurrentUser, Services, SignedIn
from backend.services.cursors import MAX_CURSOR_LENGTH

__all__ = [
    "AS_AGENT",
    "AS_USER",
    "AfterQuery",
    "AgentDep",
    "SearchQuery",
    "ServicesDep",
    "UserDep",
    "CSRF_COOKIE",
    "DEVICE_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "provide_agent",
    "provide_services",
    "provide_user",
    "session_cookies",
]

SESSION_COOKIE = "backapp_session"
DEVICE_COOKIE = "backapp_device"
"""The known-browser token (see backend.services.accounts); kept when signing out."""
DEVICE_DAYS = 365
CSRF_COOKIE = "csrftoken"  # Litestar's default CSRF cookie and header names
CSRF_HEADER = "x-csrftoken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Handler parameters filled by dependency injection (named explicitly, as Litestar 3 requires).
ServicesDep = NamedDependency[Services]
UserDep = NamedDependency[CurrentUser]
AgentDep = NamedDependency[AgentIdentity]

# Query parameters of the keyset-paged lists (API and pages): a name search and the cursor.
SearchQuery = Annotated[str | None, QueryParameter(max_length=200)]
AfterQuery = Annotated[str | None, QueryParameter(max_length=MAX_CURSOR_LENGTH)]


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_user(request: Request[Any, Any, Any], services: ServicesDep) -> CurrentUser:
    user = await services.accounts.user_for_session(request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise NotAuthenticated("sign in first: no valid session")
    if request.method not in SAFE_METHODS:
        supplied = request.headers.get(CSRF_HEADER)
        if not services.accounts.csrf_ok(user, supplied):
            raise Forbidden(
                "CSRF check failed: send the value of the 'csrftoken' cookie in the "
                "'x-csrftoken' header"
            )
    return user


async def provide_agent(request: Request[Any, Any, Any], services: ServicesDep) -> AgentIdentity:
    return await services.registry.authenticate(request.headers.get("x-agent-api-key"))


AS_USER = {"user": Provide(provide_user)}
"""The ``dependencies`` of a handler or controller for the signed-in user (``UserDep``)."""
AS_AGENT = {"agent": Provide(provide_agent)}
"""The ``dependencies`` of a handler or controller for the calling agent (``AgentDep``)."""


def session_cookies(signed_in: SignedIn | None, services: Services) -> list[Cookie]:
    """The session cookie (HttpOnly) and the CSRF cookie (readable by the page's scripts); on
    sign-in the device cookie (HttpOnly) first, on sign-out both emptied."""
    secure = services.settings.secure_cookies

    def cookie(key: str, value: str, max_age: int, *, httponly: bool) -> Cookie:
        return Cookie(
            key=key,
            value=value,
            max_age=max_age,
            httponly=httponly,
            samesite="lax",
            secure=secure,
            path="/",
        )

    if signed_in is None:
        return [
            cookie(SESSION_COOKIE, "", 0, httponly=True),
            cookie(CSRF_COOKIE, "", 0, httponly=False),
        ]
    max_age = services.settings.session_days * 86400
    return [
        cookie(DEVICE_COOKIE, signed_in.device_token, DEVICE_DAYS * 86400, httponly=True),
        cookie(SESSION_COOKIE, signed_in.session_token, max_age, httponly=True),
        cookie(CSRF_COOKIE, signed_in.csrf_token, max_age, httponly=False),
    ]
