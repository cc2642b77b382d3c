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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from backend.schemas import AgentMode
from desktop_agent.engine.schedule import Schedule

__all__ = ["ONESHOT", "SchedulePlan", "expected_back"]

ONESHOT: AgentMode = "oneshot"


@dataclass(frozen=True)
class SchedulePlan:
    """One scheduled config of an agent: its schedule, the zone it runs in, its alert grace."""

    schedule: Schedule
    tz: tzinfo
    grace: timedelta


def expected_back(
    last_seen: datetime, plans: Iterable[SchedulePlan], fallback: timedelta
) -> datetime:
    """When a one-shot agent last heard from at ``last_seen`` should be heard from again: the
    earliest next run of its scheduled configs after ``last_seen``, plus that config's grace (a run
    from cron backs every config up at once, so the earliest one is when it comes back). With no
    schedule the server cannot know when cron runs it: ``last_seen + fallback``."""
    times = [plan.schedule.next_after(last_seen, plan.tz) + plan.grace for plan in plans]
    return min(times) if times else last_seen + fallback
