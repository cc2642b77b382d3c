"""Sign up, sign in, sign out."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from backend.api.deps import DEVICE_COOKIE, SESSION_COOKIE, ServicesDep, session_cookies
from backend.errors import DomainError, NotAuthenticated, RateLimited
from backend.services import Services
from backend.web._auth import (
    CSRF_FIELD,
    PageUserDep,
    anon_csrf_cookie,
    anon_csrf_ok,
    anon_csrf_token,
    optional_user,
    provide_page_user,
    safe_next,
)
from backend.web._forms import field_errors, text
from backend.web._render import page, redirect

__all__ = ["AccountPages"]

_EXPIRED = "This form expired or did not come from this site. Please try again."


def _account_form(
    request: Request[Any, Any, Any],
    services: Services,
    template: str,
    *,
    email: str = "",
    next_path: str = "/",
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    **extra: Any,
) -> Template:
    token = anon_csrf_token(request, services)
    return page(
        request,
        template,
        user=None,
        services=services,
        status_code=status_code,
        cookies=[anon_csrf_cookie(token, services)],
        csrf_token=token,
        email=email,
        next=safe_next(next_path),
        errors=errors or {},
        **extra,
    )


class AccountPages(Controller):
    path = "/"
    include_in_schema = False

    @get("/signin", name="signin")
    async def signin_form(
        self, request: Request[Any, Any, Any], services: ServicesDep, next: FromQuery[str] = "/"
    ) -> Template | Redirect:
        if await optional_user(request, services) is not None:
            return Redirect(safe_next(next), status_code=303)
        return _account_form(
            request,
            services,
            "signin.html",
            next_path=next,
            signup=await services.accounts.signup_status(),
        )

    @post("/signin", status_code=303)
    async def signin(
        self, request: Request[Any, Any, Any], services: ServicesDep
    ) -> Template | Redirect:
        form = await request.form()
        email = text(form, "email", 400).strip()
        next_path = safe_next(text(form, "next", 2000))
        extra = {"signup": await services.accounts.signup_status()}

        def again(error: str, status_code: int) -> Template:
            return _account_form(
                request,
                services,
                "signin.html",
                email=email,
                next_path=next_path,
                errors={"form": error},
                status_code=status_code,
                **extra,
            )

        if not anon_csrf_ok(request, text(form, CSRF_FIELD, 300), services):
            return again(_EXPIRED, 403)
        client = request.client.host if request.client else "unknown"
        try:
            signed_in = await services.accounts.login(
                email,
                text(form, "password", 2000),
                client,
                request.cookies.get(DEVICE_COOKIE),
            )
        except NotAuthenticated:
            return again("Wrong e-mail or password.", 401)
        except RateLimited as exc:
            return again(f"Too many failed attempts. Try again in {exc.retry_after} s.", 429)
        return Redirect(next_path, status_code=303, cookies=session_cookies(signed_in, services))

    @get("/signup", name="signup")
    async def signup_form(
        self, request: Request[Any, Any, Any], services: ServicesDep
    ) -> Template | Redirect:
        if await optional_user(request, services) is not None:
            return Redirect("/", status_code=303)
        return _account_form(
            request,
            services,
            "signup.html",
            signup=await services.accounts.signup_status(),
        )

    @post("/signup", status_code=303)
    async def signup(
        self, request: Request[Any, Any, Any], services: ServicesDep
    ) -> Template | Redirect:
        form = await request.form()
        email = text(form, "email", 400).strip()
        password = text(form, "password", 2000)
        extra = {"signup": await services.accounts.signup_status()}
        errors: dict[str, str] = {}
        if not anon_csrf_ok(request, text(form, CSRF_FIELD, 300), services):
            errors["form"] = _EXPIRED  # answered below: 403, nothing else checked
        else:
            if not email:
                errors["email"] = "Enter your e-mail address."
            if password != text(form, "password2", 2000):
                errors["password2"] = "The two passwords differ."
        if not errors:
            try:
                user = await services.accounts.signup(email, password)
            except DomainError as exc:
                errors = field_errors(exc)
            else:
                signed_in = await services.accounts.start_session(user)
                return redirect(
                    "/",
                    services,
                    flash="Welcome to BackApp"
                    + (": you are the administrator." if user.is_admin else "."),
                    cookies=session_cookies(signed_in, services),
                )
        return _account_form(
            request,
            services,
            "signup.html",
            email=email,
            errors=errors,
            status_code=403 if "form" in errors else 400,
            **extra,
        )

    @post("/signout", status_code=303, dependencies={"user": Provide(provide_page_user)})
    async def signout(
        self, request: Request[Any, Any, Any], services: ServicesDep, user: PageUserDep
    ) -> Redirect:
        await services.accounts.logout(request.cookies.get(SESSION_COOKIE))
        return redirect(
            "/signin",
            services,
            flash="You are signed out.",
            cookies=session_cookies(None, services),
        )
