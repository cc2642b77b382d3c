"""Schedule parsing and time maths (desktop_agent/engine/schedule.py), shared by server and agents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from desktop_agent.engine.schedule import Schedule, ScheduleError, resolve_timezone

PARIS = resolve_timezone("Europe/Paris")


@pytest.mark.parametrize(
    ("given", "cron", "text"),
    [
        ({"preset": "hourly"}, "0 * * * *", "Hourly at :00"),
        ({"preset": "hourly", "minute": 15}, "15 * * * *", "Hourly at :15"),
        ({"preset": "daily", "at": "2:30"}, "30 2 * * *", "Daily at 02:30"),
        (
            {"preset": "weekly", "day": "Friday", "at": "23:59"},
            "59 23 * * 5",
            "Weekly on Fri at 23:59",
        ),
        ({"cron": " */5  * * * * "}, "*/5 * * * *", "Cron */5 * * * *"),
        ("daily", "0 0 * * *", "Daily at 00:00"),
    ],
)
def test_forms_normalise_and_round_trip(given: object, cron: str, text: str) -> None:
    schedule = Schedule.parse(given)
    assert schedule is not None
    assert schedule.cron == cron
    assert schedule.describe() == text
    # What the server stores (cron next to the preset) parses back to the same schedule.
    assert Schedule.parse(schedule.to_json()) == schedule


@pytest.mark.parametrize("empty", [None, {}, ""])
def test_no_schedule_means_manual(empty: object) -> None:
    assert Schedule.parse(empty) is None


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"cron": "61 * * * *"}, "not a valid cron"),
        ({"cron": "* * * *"}, "five fields"),
        ({"cron": "* * * * * *"}, "five fields"),
        ({"preset": "daily", "at": "24:00"}, "HH:MM"),
        ({"preset": "weekly", "day": "someday"}, "weekday"),
        ({"preset": "hourly", "minute": 60}, "0 to 59"),
        ({"preset": "hourly", "minute": True}, "0 to 59"),
        ({"preset": "monthly"}, "hourly, daily, weekly"),
        ({"preset": "daily", "cron": "* * * * *"}, "not both"),
        ({"preset": "daily", "colour": "red"}, "unknown schedule field"),
        (42, "must be an object"),
    ],
)
def test_bad_schedules_say_what_to_fix(bad: object, words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        Schedule.parse(bad)


def test_daily_in_a_time_zone_across_dst() -> None:
    daily = Schedule.parse({"preset": "daily", "at": "03:30"})
    assert daily is not None
    # Winter: Paris is UTC+1; summer (after 29 March 2026): UTC+2.
    winter = datetime(2026, 3, 27, 12, tzinfo=UTC)
    assert daily.next_after(winter, PARIS) == datetime(2026, 3, 28, 2, 30, tzinfo=UTC)
    summer = datetime(2026, 3, 29, 12, tzinfo=UTC)
    assert daily.next_after(summer, PARIS) == datetime(2026, 3, 30, 1, 30, tzinfo=UTC)
    # The day the clocks go forward is 23 hours long.
    assert daily.interval(datetime(2026, 3, 29, 0, tzinfo=UTC), PARIS) == timedelta(hours=23)


def test_due_gives_one_catch_up_run_for_many_missed_slots() -> None:
    hourly = Schedule.parse({"preset": "hourly", "minute": 0})
    assert hourly is not None
    last = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    now = datetime(2026, 1, 1, 13, 20, tzinfo=UTC)  # slept through 9:00 .. 13:00
    assert hourly.due(last, now, UTC) == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    # Once that ran, nothing is due until 14:00.
    ran = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert hourly.due(ran, now, UTC) is None
    assert hourly.due(ran, datetime(2026, 1, 1, 14, 0, tzinfo=UTC), UTC) is not None
    # Never ran: nothing before `since` counts; a slot after it does.
    assert hourly.due(None, now, UTC) is None
    assert hourly.due(None, now, UTC, since=now - timedelta(minutes=10)) is None
    assert hourly.due(None, now, UTC, since=now - timedelta(minutes=30)) == ran


def test_every_minute_is_allowed() -> None:
    minutely = Schedule.parse({"cron": "* * * * *"})
    assert minutely is not None
    now = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert minutely.interval(now, UTC) == timedelta(minutes=1)
    assert minutely.next_after(now, UTC) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def test_unknown_zone_falls_back_to_utc() -> None:
    assert resolve_timezone("Mars/Olympus") is UTC
    assert resolve_timezone(None) is UTC
