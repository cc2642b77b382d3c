"""Dependencies shared by the controllers: services, the signed-in user, the calling agent."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency

from backend.errors import Forbidden, NotAuthenticated
from backend.services import AgentIdentity, CurrentUser, Services, SignedIn

__all__ = [
    "AgentDep",
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


def session_cookies(signed_in: SignedIn | None, services: Services) -> list[Cookie]:
    """The session cookie (HttpOnly) and the CSRF cookie (readable by the page's scripts)."""
    settings = services.settings
    secure = settings.secure_cookies
    if signed_in is None:
        return [
            Cookie(
                key=SESSION_COOKIE,
                value="",
                max_age=0,
                httponly=True,
                samesite="lax",
                secure=secure,
                path="/",
            ),
            Cookie(
                key=CSRF_COOKIE,
                value="",
                max_age=0,
                httponly=False,
                samesite="lax",
                secure=secure,
                path="/",
            ),
        ]
    max_age = settings.session_days * 86400
    device = [
        Cookie(
            key=DEVICE_COOKIE,
            value=signed_in.device_token,
            max_age=DEVICE_DAYS * 86400,
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )
    ]
    return device + [
        Cookie(
            key=SESSION_COOKIE,
            value=signed_in.session_token,
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        ),
        Cookie(
            key=CSRF_COOKIE,
            value=signed_in.csrf_token,
            max_age=max_age,
            httponly=False,
            samesite="lax",
            secure=secure,
            path="/",
        ),
    ]
