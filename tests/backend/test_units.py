"""Unit tests of pure pieces: key building, filename checks, status, secrets, settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.errors import InvalidInput
from backend.security import api_key_digest, hash_password, new_api_key, verify_password
from backend.services.agents import compute_status
from backend.services.keys import backup_key, config_prefix, validate_filename
from backend.settings import Settings, load_secret

U = uuid.UUID("11111111-1111-1111-1111-111111111111")
A = uuid.UUID("22222222-2222-2222-2222-222222222222")
C = uuid.UUID("33333333-3333-3333-3333-333333333333")


def test_backup_key_follows_the_spec_template() -> None:
    assert backup_key(
        user_id=U, agent_id=A, config_id=C, filename="backup-2025-01-07-143022.tar.gz"
    ) == (
        "users/11111111-1111-1111-1111-111111111111/agents/22222222-2222-2222-2222-222222222222/"
        "configs/33333333-3333-3333-3333-333333333333/backup-2025-01-07-143022.tar.gz"
    )


def test_server_mode_prefix() -> None:
    assert config_prefix(user_id="u", agent_id=None, config_id="c") == "users/u/server/configs/c"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x", "'/'"),
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("a..b.tar.gz", "'..'"),
        ("x\ny", "control"),
        ("x\x00y", "control"),
        ("x" * 201, "at most 200"),
        ("", "empty"),
        (".hidden", "must not start"),
        ("-rf", "must not start"),
        ("sp ace.tar", "only letters"),
        ("naïve.tar", "only letters"),
        ("a\\b", "'/'"),
    ],
)
def test_bad_filenames_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_filename(name)
    assert why in info.value.detail
    assert info.value.field == "filename"


@pytest.mark.parametrize("name", ["backup-2025-01-07-143022.tar.gz", "a", "x" * 200, "_b.tar.zst"])
def test_good_filenames(name: str) -> None:
    validate_filename(name)


NOW = datetime(2025, 1, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("active", "seen_ago", "expected"),
    [
        (True, 10, "online"),
        (True, 91, "offline"),
        (True, None, "offline"),
        (False, 1, "offline"),
    ],
)
def test_status(active: bool, seen_ago: int | None, expected: str) -> None:
    last_seen = None if seen_ago is None else NOW - timedelta(seconds=seen_ago)
    assert compute_status(active=active, last_seen=last_seen, now=NOW, offline_after=90) == expected


@pytest.mark.parametrize(
    ("seen_ago", "expected_in", "expected"),
    [
        (10, 3600, "online"),  # beating: it is running now
        (600, 3600, "idle"),  # a one-shot agent between runs, expected back within the hour
        (600, -1, "offline"),  # it missed its next run (and the grace)
    ],
)
def test_status_of_a_oneshot_agent(seen_ago: int, expected_in: int, expected: str) -> None:
    assert (
        compute_status(
            active=True,
            last_seen=NOW - timedelta(seconds=seen_ago),
            now=NOW,
            offline_after=90,
            expected_by=NOW + timedelta(seconds=expected_in),
        )
        == expected
    )


def test_naive_sqlite_timestamps_are_read_as_utc() -> None:
    naive = (NOW - timedelta(seconds=10)).replace(tzinfo=None)
    assert compute_status(active=True, last_seen=naive, now=NOW, offline_after=90) == "online"


def test_api_keys_are_random_prefixed_and_digested_with_the_secret() -> None:
    key = new_api_key()
    assert key.startswith("bka_") and len(key) == 4 + 43
    assert key != new_api_key()
    digest = api_key_digest(b"s1", key)
    assert len(digest) == 64 and key not in digest
    assert digest != api_key_digest(b"s2", key)
    assert digest == api_key_digest(b"s1", key)


def test_passwords_are_argon2id() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "anything")


def test_secret_is_created_once_with_0600(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    assert load_secret(tmp_path) == first
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BACKAPP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("BACKAPP_POLL_INTERVAL", "10")
    monkeypatch.setenv("AWS_S3_BUCKET", "bucket")
    s = Settings.from_env()
    assert s.database_url == f"sqlite:///{tmp_path / 'backapp.sqlite3'}"
    assert s.offline_after_seconds == 30
    assert s.s3_bucket == "bucket"
    assert s.base_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("BACKAPP_POLL_INTERVAL", "soon")
    with pytest.raises(ValueError, match="BACKAPP_POLL_INTERVAL"):
        Settings.from_env()
