"""Pairing codes: a short one-time code a new machine trades for its own API key.

The owner asks for a code on the Agents page (*Add a machine*) or with
``POST /api/agents/pairing-codes``; the machine sends it to ``POST /api/agent/pair``
(``backapp-agent pair``, the tray's first-run window) and gets a new agent's API key, which it
stores in its keychain: nobody copies a 46-character key by hand and the key is never shown.

* A code is nine characters from a 31-letter alphabet without look-alikes (no 0/O, 1/I/L), drawn
  from the OS CSPRNG (``secrets``): about 44 bits, shown as ``K7Q-4MX-P2D``. Only its keyed digest
  (HMAC-SHA256 with the server secret, as for API keys) is stored.
* It is valid ``BACKAPP_PAIRING_CODE_MINUTES`` (15) and only once: the first redemption marks it
  used in one conditional ``UPDATE``, so two machines racing for it cannot both win.
* Redeeming is unauthenticated, so it is rate-limited per client address: past
  ``BACKAPP_PAIRING_RATE_LIMIT`` (10) failed attempts in ``BACKAPP_LOGIN_LOCKOUT_SECONDS`` every
  attempt is refused with 429, a right code included, so that guessing learns nothing. With 44
  bits and a 15-minute life, ten guesses per address per window leave no useful odds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from backend.accounts.tables import LoginThrottle, User
from backend.agents.tables import PairingCode
from backend.errors import Conflict, InvalidInput, NotFound, RateLimited
from backend.schemas import AgentOut
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentService
from backend.services.clock import aware, utcnow
from backend.settings import Settings

__all__ = ["ALPHABET", "IssuedCode", "PairingService", "format_code", "normalise_code"]

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
"""Upper-case letters and digits without the ones people confuse (0/O, 1/I/L)."""
CODE_LENGTH = 9
_THROTTLE_PREFIX = "pair:ip:"


@dataclass(frozen=True)
class IssuedCode:
    """A new pairing code: shown once to the owner, then only its digest exists."""

    code: str
    name: str
    expires_at: datetime


def format_code(raw: str) -> str:
    """``K7Q4MXP2D`` → ``K7Q-4MX-P2D`` (groups of three are easier to read out and type)."""
    return "-".join(raw[i : i + 3] for i in range(0, len(raw), 3))


def normalise_code(code: str) -> str | None:
    """The code as it is stored (upper case, no dashes or spaces), or None when it cannot be one
    (a wrong length or a letter outside the alphabet): a typo, not worth a database read."""
    raw = "".join(ch for ch in code.upper() if ch not in "- \t")
    if len(raw) != CODE_LENGTH or any(ch not in ALPHABET for ch in raw):
        return None
    return raw


class PairingService:
    """Issues pairing codes and trades them for agents. ``clock`` is injectable (tests move it)."""

    def __init__(
        self,
        settings: Settings,
        agents: AgentService,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.agents = agents
        self.clock = clock

    def _digest(self, raw: str) -> str:
        message = f"backapp-pairing:{raw}".encode()
        return hmac.new(self.settings.secret_key, message, hashlib.sha256).hexdigest()

    async def issue(self, user: CurrentUser, name: str) -> IssuedCode:
        """A new code that creates an agent called ``name`` for ``user`` when redeemed."""
        name = name.strip()
        if not name:
            raise InvalidInput("name: give the machine a name, such as its own", field="name")
        if len(name) > 200:
            raise InvalidInput("name: at most 200 characters", field="name")
        raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        now = self.clock()
        expires = now + timedelta(minutes=self.settings.pairing_code_minutes)
        await PairingCode(
            id=uuid.uuid4(),
            user=user.id,
            name=name,
            code_digest=self._digest(raw),
            expires_at=expires,
            created_at=now,
        ).save()
        return IssuedCode(code=format_code(raw), name=name, expires_at=expires)

    async def redeem(
        self, code: str, client: str, platform: str | None
    ) -> tuple[AgentOut, str, CurrentUser]:
        """Trade ``code`` for a new agent and its API key (and its owner, for the caller's log).

        :class:`RateLimited` past the limit for ``client``; :class:`NotFound` for a code that does
        not exist, :class:`Conflict` for one already used or expired: each counts as a failure."""
        throttle_key = _THROTTLE_PREFIX + client
        now = self.clock()
        await self._check_throttle(throttle_key, now)
        raw = normalise_code(code)
        row = None
        if raw is not None:
            row = (
                await PairingCode.select()
                .where(PairingCode.code_digest == self._digest(raw))
                .first()
            )
        if row is None:
            await self._record_failure(throttle_key, now)
            raise NotFound(
                "code: no such pairing code. Check it (nine letters and digits, such as "
                "K7Q-4MX-P2D), or create a new one with Add a machine on the Agents page",
                field="code",
            )
        if row["used_at"] is not None:
            await self._record_failure(throttle_key, now)
            raise _used()
        expires = aware(row["expires_at"])
        assert expires is not None
        if now >= expires:
            await self._record_failure(throttle_key, now)
            raise Conflict(
                "code: this pairing code expired (it was valid for "
                f"{self.settings.pairing_code_minutes} minutes). Create a new one with Add a "
                "machine on the Agents page",
                field="code",
                extra={"reason": "expired"},
            )
        # One conditional UPDATE: of two machines racing for the code, only one gets a row back.
        won = (
            await PairingCode.update({PairingCode.used_at: now})
            .where((PairingCode.id == row["id"]) & PairingCode.used_at.is_null())
            .returning(PairingCode.id)
        )
        if not won:
            await self._record_failure(throttle_key, now)
            raise _used()
        owner = (
            await User.select(User.id, User.email, User.is_admin)
            .where(User.id == row["user"])
            .first()
        )
        if owner is None:  # the account went away between the two reads
            raise NotFound("code: no such pairing code", field="code")
        user = CurrentUser(id=owner["id"], email=owner["email"], is_admin=owner["is_admin"])
        agent, key = await self.agents.register(user, row["name"], platform)
        await PairingCode.update({PairingCode.agent: uuid.UUID(agent.id)}).where(
            PairingCode.id == row["id"]
        )
        await LoginThrottle.delete().where(LoginThrottle.key == throttle_key)
        return agent, key, user

    # --- the limit, in the sign-in throttle's table (shared by every server process) -----------

    async def _check_throttle(self, key: str, now: datetime) -> None:
        window = timedelta(seconds=self.settings.login_lockout_seconds)
        row = await LoginThrottle.select().where(LoginThrottle.key == key).first()
        if row is None:
            return
        started = aware(row["window_started"]) or now
        if now - started < window and row["failures"] >= self.settings.pairing_rate_limit:
            retry = int((started + window - now).total_seconds()) + 1
            raise RateLimited(
                f"too many wrong pairing codes from this address: wait {_minutes(retry)} "
                "before trying again",
                retry_after=retry,
            )

    async def _record_failure(self, key: str, now: datetime) -> None:
        window = timedelta(seconds=self.settings.login_lockout_seconds)
        row = await LoginThrottle.select().where(LoginThrottle.key == key).first()
        if row is None:
            try:
                await LoginThrottle(id=uuid.uuid4(), key=key, failures=1, window_started=now).save()
                return
            except Exception:  # a concurrent failure created it first
                row = await LoginThrottle.select().where(LoginThrottle.key == key).first()
                if row is None:
                    return
        if now - (aware(row["window_started"]) or now) >= window:
            await LoginThrottle.update(
                {LoginThrottle.failures: 1, LoginThrottle.window_started: now}
            ).where(LoginThrottle.key == key)
        else:
            await LoginThrottle.update({LoginThrottle.failures: LoginThrottle.failures + 1}).where(
                LoginThrottle.key == key
            )


def _minutes(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _used() -> Conflict:
    """The refusal of a code already traded (seen on reading it, or lost in a race for it)."""
    return Conflict(
        "code: this pairing code was already used. Create a new one with Add a machine on "
        "the Agents page",
        field="code",
        extra={"reason": "used"},
    )
