"""Users, sign-in sessions and brute-force protection.

Failed sign-ins are counted in fixed windows of ``BACKAPP_LOGIN_LOCKOUT_SECONDS`` per client address
(3x ``BACKAPP_LOGIN_RATE_LIMIT``) and per account (``BACKAPP_LOGIN_RATE_LIMIT``); past either limit a
sign-in waits (429), even with the right password, so that guessing learns nothing. A browser that
signed in to an account before carries a *known-browser* token for it (the ``backapp_device``
cookie, HMAC-signed with the server secret and bound to the account): its attempts skip the address
and account counts and are counted against that token alone. So strangers who lock an account
keep only themselves out, and a stolen token buys ``BACKAPP_LOGIN_RATE_LIMIT`` guesses per window.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from backend.accounts.tables import LoginThrottle, User, UserSession
from backend.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
)
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
    device_token: str = ""
    """The browser's new known-browser token for this account (see the module docstring)."""


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

    async def set_password(self, email: str, password: str) -> None:
        """Give an account a new password (``backapp user password``) and end its sessions;
        :class:`NotFound` when there is no such account."""
        email = normalise_email(email)
        _check_password(password)
        done = (
            await User.update({User.password_hash: hash_password(password)})
            .where(User.email == email)
            .returning(User.id)
        )
        if not done:
            raise NotFound("email: there is no account with this e-mail")
        await UserSession.delete().where(UserSession.user == done[0]["id"])

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

    async def login(
        self, email: str, password: str, client: str, device: str | None = None
    ) -> SignedIn:
        """Check the password within the limits; ``client`` is the caller's address and ``device``
        the browser's known-browser token, if it has one."""
        try:
            email = normalise_email(email)
        except InvalidInput:
            raise NotAuthenticated("wrong e-mail or password") from None
        row = await User.select().where(User.email == email).first()
        nonce = self._device_nonce(device, row["id"]) if row is not None else None
        # A known browser is throttled on its own: strangers' failures do not lock it out.
        keys = [f"device:{nonce}"] if nonce else [f"email:{email}", f"ip:{client}"]
        await self._check_throttle(keys)
        if row is None or not verify_password(row["password_hash"], password):
            await self._record_failure(keys)
            raise NotAuthenticated("wrong e-mail or password")
        if password_needs_rehash(row["password_hash"]):
            await User.update({User.password_hash: hash_password(password)}).where(
                User.id == row["id"]
            )
        # Only this browser's own count is cleared: the owner signing in from a known browser
        # does not hand the strangers a fresh window.
        await LoginThrottle.delete().where(LoginThrottle.key == keys[0])
        user = CurrentUser(id=row["id"], email=row["email"], is_admin=row["is_admin"])
        return await self.start_session(user)

    # --- known browsers -----------------------------------------------------------------------

    def _device_signature(self, user_id: uuid.UUID, nonce: str) -> str:
        message = f"backapp-device:{user_id}:{nonce}".encode()
        return hmac.new(self.settings.secret_key, message, hashlib.sha256).hexdigest()[:32]

    def device_token(self, user_id: uuid.UUID) -> str:
        """A new known-browser token for ``user_id``'s account."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._device_signature(user_id, nonce)}"

    def _device_nonce(self, token: str | None, user_id: uuid.UUID) -> str | None:
        """The token's nonce when it is a valid known-browser token of ``user_id``, else None."""
        if not token or len(token) > 100:
            return None
        nonce, _, signature = token.partition(".")
        if not nonce or not hmac.compare_digest(signature, self._device_signature(user_id, nonce)):
            return None
        return nonce

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
        return SignedIn(
            user=current,
            session_token=token,
            csrf_token=csrf,
            device_token=self.device_token(user.id),
        )

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
        return per_account * 3 if key.startswith("ip:") else per_account

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
