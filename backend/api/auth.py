from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from backend.api.deps import (
    AS_USER,
    CSRF_COOKIE,
    DEVICE_COOKIE,
    SESSION_COOKIE,
    ServicesDep,
    UserDep,
    session_cookies,
)
from backend.api.guards import api_guard
from backend.schemas import Credentials, OkResponse, UserOut, UserResponse


def _user_out(user: UserDep) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, is_admin=user.is_admin)


class AuthController(Controller):
    path = "/api/auth"
    guards = [api_guard]
    tags = ["accounts"]

    @post("/signup", status_code=HTTP_201_CREATED, summary="Create an account and sign in")
    async def signup(
        self, data: JSONBody[Credentials], services: ServicesDep
    ) -> Response[UserResponse]:
        """The first account may always sign up and becomes admin; later ones only when
        ``BACKAPP_ALLOW_SIGNUP`` is on."""
        user = await services.accounts.signup(data.email, data.password)
        signed_in = await services.accounts.start_session(user)
        return Response(
            UserResponse(user=_user_out(signed_in.user)),
            status_code=HTTP_201_CREATED,
            cookies=session_cookies(signed_in, services),
        )

    @post("/login", status_code=HTTP_200_OK, summary="Sign in")
    async def login(
        self, data: JSONBody[Credentials], services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[UserResponse]:
        client = request.client.host if request.client else "unknown"
        signed_in = await services.accounts.login(
            data.email, data.password, client, request.cookies.get(DEVICE_COOKIE)
        )
        return Response(
            UserResponse(user=_user_out(signed_in.user)),
            cookies=session_cookies(signed_in, services),
        )

    @post(
        "/logout",
        status_code=HTTP_200_OK,
        summary="Sign out",
        dependencies=AS_USER,
    )
    async def logout(
        self, services: ServicesDep, request: Request[Any, Any, Any], user: UserDep
    ) -> Response[OkResponse]:
        await services.accounts.logout(request.cookies.get(SESSION_COOKIE))
        return Response(OkResponse(), cookies=session_cookies(None, services))

    @get("/me", summary="The signed-in user", dependencies=AS_USER)
    async def me(self, user: UserDep, services: ServicesDep) -> Response[UserResponse]:
        # Re-issue the CSRF cookie so a client that lost it can recover without signing in again.
        cookie = Cookie(
            key=CSRF_COOKIE,
            value=user.csrf_token,
            max_age=services.settings.session_days * 86400,
            httponly=False,
            samesite="lax",
            secure=services.settings.secure_cookies,
            path="/",
        )
        return Response(UserResponse(user=_user_out(user)), cookies=[cookie])
