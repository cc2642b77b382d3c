"""The GFS selection (backend/services/gfs.py) on a fixed clock: what each rule keeps, in which
time zone, across DST changes; and how ``retentionDays`` combines with the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backend.services.gfs import Candidate, Policy, decide, policy_of

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def daily(n: int, hour: int = 3) -> list[Candidate]:
    """One backup a day at ``hour`` UTC, the newest today, named by age in days."""
    start = NOW.replace(hour=hour)
    return [Candidate(f"d{i}", start - timedelta(days=i)) for i in range(n)]


def kept(backups: list[Candidate], policy: Policy, tz: ZoneInfo = PARIS) -> set[str]:
    decision = decide(backups, policy, NOW, tz)
    assert set(decision.keep) | set(decision.remove) == {b.id for b in backups}
    assert not set(decision.keep) & set(decision.remove)
    return set(decision.keep)


def test_policy_of_reads_the_options_and_ignores_zeros_and_junk() -> None:
    assert policy_of({"retentionDays": 30}) == Policy(days=30, counts={})
    assert policy_of({"retentionDays": 0, "retention": {"keepLast": 3, "keepDaily": 0}}) == Policy(
        days=0, counts={"last": 3}
    )
    assert not policy_of({"retentionDays": 0, "retention": None}).active
    assert not policy_of({"retentionDays": True, "retention": {"keepLast": "3"}}).active
    assert not policy_of(None).active


def test_no_rule_keeps_everything() -> None:
    backups = daily(50)
    assert kept(backups, Policy()) == {b.id for b in backups}


def test_retention_days_alone_is_the_seed_behaviour() -> None:
    # 10 days: d0..d9 finished within the window (d10 is 10 days and 9 hours old).
    assert kept(daily(20), Policy(days=10)) == {f"d{i}" for i in range(10)}


def test_keep_last_keeps_the_newest_n() -> None:
    assert kept(daily(10), Policy(counts={"last": 3})) == {"d0", "d1", "d2"}


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    # Three backups a day for five days (03:00, 10:00, 20:00 UTC = 05, 12, 22 in Paris).
    backups = [
        Candidate(f"d{d}h{h}", NOW.replace(hour=h) - timedelta(days=d))
        for d in range(5)
        for h in (3, 10, 20)
        if NOW.replace(hour=h) - timedelta(days=d) <= NOW
    ]
    # Today has only 03:00 and 10:00 so far (NOW is 12:00 UTC).
    assert kept(backups, Policy(counts={"daily": 3})) == {"d0h10", "d1h20", "d2h20"}


def test_the_day_is_the_machines_day() -> None:
    # 23:30 UTC is the next day in Paris but the same day in New York.
    late = [
        Candidate("mon-late", datetime(2026, 6, 8, 23, 30, tzinfo=UTC)),
        Candidate("mon-early", datetime(2026, 6, 8, 8, 0, tzinfo=UTC)),
        Candidate("sun", datetime(2026, 6, 7, 12, 0, tzinfo=UTC)),
    ]
    policy = Policy(counts={"daily": 2})
    # Paris: mon-late is Tuesday 01:30, so Monday's newest is mon-early.
    assert kept(late, policy, PARIS) == {"mon-late", "mon-early"}
    # New York: both are Monday; the second day kept is Sunday.
    assert kept(late, policy, NEW_YORK) == {"mon-late", "sun"}


def test_weekly_monthly_yearly_buckets() -> None:
    backups = daily(800, hour=12)
    weekly = kept(backups, Policy(counts={"weekly": 4}))
    assert len(weekly) == 4
    # ISO weeks start on Monday: the kept ones (after today's) are Sundays.
    assert all(
        next(b for b in backups if b.id == i).when.astimezone(PARIS).isoweekday() == 7
        for i in weekly - {"d0"}
    )
    monthly = kept(backups, Policy(counts={"monthly": 3}))
    days = sorted(next(b for b in backups if b.id == i).when.date() for i in monthly)
    assert [str(d) for d in days] == ["2026-04-30", "2026-05-31", "2026-06-15"]
    yearly = kept(backups, Policy(counts={"yearly": 5}))
    years = sorted(str(next(b for b in backups if b.id == i).when.date()) for i in yearly)
    # 800 days reach back into 2024: three years have backups.
    assert years == ["2024-12-31", "2025-12-31", "2026-06-15"]


def test_rules_add_up_and_days_keep_everything_recent() -> None:
    backups = daily(100, hour=12)
    policy = Policy(days=7, counts={"last": 2, "monthly": 3})
    result = kept(backups, policy)
    recent = {f"d{i}" for i in range(8)}  # within 7 days (d7 is exactly 7 days old)
    monthly_ends = {b.id for b in backups if str(b.when.date()) in ("2026-05-31", "2026-04-30")}
    assert result == recent | monthly_ends


def test_the_newest_is_kept_even_when_every_rule_would_drop_it() -> None:
    old = [Candidate(f"o{i}", NOW - timedelta(days=400 + i)) for i in range(3)]
    assert kept(old, Policy(days=30)) == {"o0"}
    # ``newest`` names it when the caller orders by start time.
    decision = decide(old, Policy(days=30), NOW, PARIS, newest="o1")
    assert set(decision.keep) == {"o1"} and decision.keep["o1"] == ["newest"]


def test_hourly_across_the_autumn_dst_change() -> None:
    # 2026-10-25 in Paris: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    third = datetime(2026, 10, 25, 2, 30, tzinfo=UTC)  # 03:30 CET
    backups = [Candidate("a", first), Candidate("b", second), Candidate("c", third)]
    now = datetime(2026, 10, 25, 3, 0, tzinfo=UTC)
    # The two 02:30s are the same wall-clock hour: one bucket, the newer one kept.
    decision = decide(backups, Policy(counts={"hourly": 3}), now, PARIS)
    assert set(decision.keep) == {"b", "c"} and decision.remove == ["a"]
    # In UTC they are three hours.
    assert set(decide(backups, Policy(counts={"hourly": 3}), now, ZoneInfo("UTC")).keep) == {
        "a",
        "b",
        "c",
    }


def test_daily_across_the_spring_dst_change() -> None:
    # 2026-03-29 in Paris is 23 hours long; a backup at local 00:30 and 23:30 each day.
    backups = []
    for day in (28, 29, 30):
        for hour, minute in ((0, 30), (23, 30)):
            local = datetime(2026, 3, day, hour, minute, tzinfo=PARIS)
            backups.append(Candidate(f"{day}-{hour:02d}", local.astimezone(UTC)))
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    decision = decide(backups, Policy(counts={"daily": 3}), now, PARIS)
    assert set(decision.keep) == {"30-23", "29-23", "28-23"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("last", 5), ("hourly", 5), ("daily", 5), ("weekly", 5), ("monthly", 5), ("yearly", 3)],
)
def test_a_rule_keeps_as_many_periods_as_asked_and_exist(rule: str, expected: int) -> None:
    # Every 7 hours for 583 days: back to November 2024, so only three years have backups.
    backups = [Candidate(f"b{i}", NOW - timedelta(hours=7 * i)) for i in range(2000)]
    decision = decide(backups, Policy(counts={rule: 5}), NOW, PARIS)
    assert len(decision.keep) == expected
    assert "b0" in decision.keep
