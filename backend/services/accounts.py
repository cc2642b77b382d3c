"""Users, sign-in sessions and brute-force protection."""

from __future__ import annotations

import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from backend.accounts.tables import LoginThrottle, User, UserSession
from backend.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, RateLimited
from backend.security import (
    hash_password,
    new_token,
    password_needs_rehash,
    token_hash,
    verify_password,
)
from backend.services.clock import aware, utcnow
from backend.settings import Settings

__all__ = ["AccountService", "CurrentUser", "SignedIn", "normalise_email"]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class CurrentUser:
    id: uuid.UUID
    email: str
    is_admin: bool
    session_id: uuid.UUID | None = None
    csrf_token: str = ""


@dataclass(frozen=True)
class SignedIn:
    user: CurrentUser
    session_token: str
    csrf_token: str


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise InvalidInput("email: not a valid e-mail address", field="email")
    return value


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            f"password: at least {MIN_PASSWORD} characters, please", field="password"
        )
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"password: at most {MAX_PASSWORD} characters", field="password")


class AccountService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def create_user(
        self, email: str, password: str, *, is_admin: bool = False
    ) -> CurrentUser:
        email = normalise_email(email)
        _check_password(password)
        if await User.exists().where(User.email == email):
            raise Conflict("email: an account with this e-mail already exists", field="email")
        user = User(
            id=uuid.uuid4(),
            email=email,
            password_hash=hash_password(password),
            is_admin=is_admin,
            created_at=utcnow(),
        )
        try:
            await user.save()
        except Exception as exc:  # a concurrent sign-up with the same e-mail hit the unique index
            if await User.exists().where(User.email == email):
                raise Conflict(
                    "email: an account with this e-mail already exists", field="email"
                ) from exc
            raise
        return CurrentUser(id=user.id, email=email, is_admin=is_admin)

    async def signup(self, email: str, password: str) -> CurrentUser:
        """The first account may always sign up and becomes admin; later ones only when allowed."""
        first = await User.count() == 0
        if not first and not self.settings.allow_signup:
            raise Forbidden("sign-up is closed on this server: ask an administrator for an account")
        user = await self.create_user(email, password, is_admin=first)
        if first and await User.count() > 1:
            # Two "first" sign-ups raced: only the oldest account stays admin.
            oldest = await User.select(User.id).order_by(User.created_at).first()
            if oldest and oldest["id"] != user.id:
                await User.update({User.is_admin: False}).where(User.id == user.id)
                user = CurrentUser(id=user.id, email=user.email, is_admin=False)
        return user

    async def signup_status(self) -> Literal["first", "open", "closed"]:
        """What :meth:`signup` would do now: ``first`` (no account yet: it makes the admin),
        ``open`` (``BACKAPP_ALLOW_SIGNUP``) or ``closed``."""
        if not await User.exists():
            return "first"
        return "open" if self.settings.allow_signup else "closed"

    async def login(self, email: str, password: str, client: str) -> SignedIn:
        try:
            email = normalise_email(email)
        except InvalidInput:
            raise NotAuthenticated("wrong e-mail or password") from None
        keys = [f"email:{email}", f"ip:{client}"]
        await self._check_throttle(keys)
        row = await User.select().where(User.email == email).first()
        if row is None or not verify_password(row["password_hash"], password):
            await self._record_failure(keys)
            raise NotAuthenticated("wrong e-mail or password")
        if password_needs_rehash(row["password_hash"]):
            await User.update({User.password_hash: hash_password(password)}).where(
                User.id == row["id"]
            )
        await LoginThrottle.delete().where(LoginThrottle.key == keys[0])
        user = CurrentUser(id=row["id"], email=row["email"], is_admin=row["is_admin"])
        return await self.start_session(user)

    async def start_session(self, user: CurrentUser) -> SignedIn:
        token, csrf = new_token(), new_token()
        now = utcnow()
        session = UserSession(
            id=uuid.uuid4(),
            token_hash=token_hash(token),
            user=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(days=self.settings.session_days),
        )
        await session.save()
        # Expired sessions of this user are swept at sign-in; nothing else needs a sweeper.
        await UserSession.delete().where(
            (UserSession.user == user.id) & (UserSession.expires_at < now)
        )
        current = CurrentUser(
            id=user.id,
            email=user.email,
            is_admin=user.is_admin,
            session_id=session.id,
            csrf_token=csrf,
        )
        return SignedIn(user=current, session_token=token, csrf_token=csrf)

    async def logout(self, session_token: str | None) -> None:
        if session_token:
            await UserSession.delete().where(UserSession.token_hash == token_hash(session_token))

    async def user_for_session(self, session_token: str | None) -> CurrentUser | None:
        if not session_token or len(session_token) > 200:
            return None
        row = (
            await UserSession.select(
                UserSession.id,
                UserSession.csrf_token,
                UserSession.expires_at,
                UserSession.user.id.as_alias("user_id"),
                UserSession.user.email.as_alias("email"),
                UserSession.user.is_admin.as_alias("is_admin"),
            )
            .where(UserSession.token_hash == token_hash(session_token))
            .first()
        )
        if row is None:
            return None
        expires = aware(row["expires_at"])
        if expires is None or expires <= utcnow():
            await UserSession.delete().where(UserSession.id == row["id"])
            return None
        return CurrentUser(
            id=row["user_id"],
            email=row["email"],
            is_admin=bool(row["is_admin"]),
            session_id=row["id"],
            csrf_token=row["csrf_token"],
        )

    @staticmethod
    def csrf_ok(user: CurrentUser, supplied: str | None) -> bool:
        return bool(supplied) and hmac.compare_digest(user.csrf_token, supplied or "")

    # --- brute-force protection -------------------------------------------------------------

    def _limit_for(self, key: str) -> int:
        per_account = self.settings.login_rate_limit
        return per_account if key.startswith("email:") else per_account * 3

    async def _check_throttle(self, keys: list[str]) -> None:
        now = utcnow()
        window = timedelta(seconds=self.settings.login_lockout_seconds)
        rows = await LoginThrottle.select().where(LoginThrottle.key.is_in(keys))
        for row in rows:
            started = aware(row["window_started"]) or now
            if now - started >= window:
                continue
            if row["failures"] >= self._limit_for(row["key"]):
                retry = int((started + window - now).total_seconds()) + 1
                raise RateLimited(
                    "too many failed sign-in attempts: wait before trying again",
                    retry_after=retry,
                )

    async def _record_failure(self, keys: list[str]) -> None:
        now = utcnow()
        window = timedelta(seconds=self.settings.login_lockout_seconds)
        for key in keys:
            row = await LoginThrottle.select().where(LoginThrottle.key == key).first()
            if row is None:
                try:
                    await LoginThrottle(
                        id=uuid.uuid4(), key=key, failures=1, window_started=now
                    ).save()
                except Exception:  # a concurrent failure created it first
                    await LoginThrottle.update(
                        {LoginThrottle.failures: LoginThrottle.failures + 1}
                    ).where(LoginThrottle.key == key)
            elif now - (aware(row["window_started"]) or now) >= window:
                await LoginThrottle.update(
                    {LoginThrottle.failures: 1, LoginThrottle.window_started: now}
                ).where(LoginThrottle.key == key)
            else:
                await LoginThrottle.update(
                    {LoginThrottle.failures: LoginThrottle.failures + 1}
                ).where(LoginThrottle.key == key)
