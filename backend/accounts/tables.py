from __future__ import annotations

from piccolo.columns import (
    UUID,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table


class User(Table, tablename="backapp_user"):
    id = UUID(primary_key=True)
    email = Varchar(length=320, unique=True, help_text="Lower-cased sign-in e-mail.")
    password_hash = Varchar(length=255, help_text="argon2id hash (argon2-cffi encoded form).")
    is_admin = Boolean(default=False)
    created_at = Timestamptz()


class UserSession(Table, tablename="backapp_session"):
    """A server-side sign-in session; the cookie holds a random token, the table its SHA-256."""

    id = UUID(primary_key=True)
    token_hash = Varchar(length=64, unique=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    csrf_token = Varchar(length=64, help_text="Double-submit token bound to this session.")
    created_at = Timestamptz()
    expires_at = Timestamptz(index=True)


class LoginThrottle(Table, tablename="backapp_login_throttle"):
    """Failed sign-in attempts per account and per client address, in a fixed window."""

    id = UUID(primary_key=True)
    key = Varchar(length=400, unique=True, help_text="'email:<addr>' or 'ip:<addr>'.")
    failures = Integer(default=0)
    window_started = Timestamptz()
