"""When an agent is expected to be heard from, by the way it runs.

An agent declares its mode in its heartbeat (``docs/agent-api.md``): ``daemon`` and ``tray`` keep
running and beat every ``pollInterval``, so silence past a few intervals means it is offline. A
``oneshot`` agent (``backapp-agent run`` from cron or a systemd timer) beats only while it runs and is
silent, by design, between runs: it is expected back at the next scheduled run of its configs (plus
that config's alert grace), and only silence past that means something is wrong. An agent that did
not say (an older one) counts as always running, as before.

Pure functions over parsed schedules, so the rules are tested exactly; the services read the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from croniter import croniter

from backend.schemas import AgentMode
from desktop_agent.engine.schedule import Schedule

__all__ = ["ONESHOT", "PlanMemo", "SchedulePlan", "expected_back"]

ONESHOT: AgentMode = "oneshot"


@dataclass(frozen=True)
class SchedulePlan:
    """One scheduled config of an agent: its schedule, the zone it runs in, its alert grace."""

    schedule: Schedule
    tz: tzinfo
    grace: timedelta


NextAfter = Callable[[Schedule, datetime, tzinfo], datetime]


def expected_back(
    last_seen: datetime,
    plans: Iterable[SchedulePlan],
    fallback: timedelta,
    next_after: NextAfter | None = None,
) -> datetime:
    """When a one-shot agent last heard from at ``last_seen`` should be heard from again: the
    earliest next run of its scheduled configs after ``last_seen``, plus that config's grace (a run
    from cron backs every config up at once, so the earliest one is when it comes back). With no
    schedule the server cannot know when cron runs it: ``last_seen + fallback``. ``next_after``
    stands in for ``Schedule.next_after`` (:meth:`PlanMemo.next_after`)."""
    if next_after is None:
        times = [plan.schedule.next_after(last_seen, plan.tz) + plan.grace for plan in plans]
    else:
        times = [next_after(plan.schedule, last_seen, plan.tz) + plan.grace for plan in plans]
    return min(times) if times else last_seen + fallback


class PlanMemo:
    """What working out when many one-shot agents are due back (a list of them) can share: the
    schedule and grace of each options text already read, each schedule parsed once, and one
    cron iterator per expression, moved to each agent's moment in turn. Parsing schedules and making iterators (croniter parses
    its expression each time) were most of the cost of such an agent's row in a list.

    One per list, used by one thread: an iterator holds the moment it was last moved to."""

    def __init__(self) -> None:
        self.options: dict[str, tuple[Schedule | None, timedelta]] = {}
        self.schedules: dict[bytes, Schedule | None] = {}
        self._iterators: dict[str, croniter] = {}

    def next_after(self, schedule: Schedule, moment: datetime, tz: tzinfo) -> datetime:
        """What ``schedule.next_after(moment, tz)`` answers, from an iterator made once."""
        local = moment.astimezone(tz)
        iterator = self._iterators.get(schedule.cron)
        if iterator is None:
            iterator = self._iterators[schedule.cron] = croniter(schedule.cron, local)
        found: datetime = iterator.get_next(datetime, start_time=local)
        return found.astimezone(UTC)
