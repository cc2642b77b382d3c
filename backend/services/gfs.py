"""Which backups a retention policy keeps: pure functions, no database, no clock.

A config's policy has two parts (``options``):

* ``retentionDays: N`` keeps every backup that finished within the last N days (0: no limit by
  age). Without GFS rules it is the whole policy, as before: older backups are removed.
* ``retention: {"keepLast", "keepHourly", "keepDaily", "keepWeekly", "keepMonthly",
  "keepYearly"}`` (grandfather-father-son): ``keepLast: n`` keeps the n newest backups;
  ``keepDaily: n`` keeps the newest backup of each of the n most recent days that have one (and
  so on for hours, ISO weeks, months and years). Periods are the wall-clock periods of the
  machine that runs the config, so "daily" means that machine's days, across DST changes.

A backup is kept when any rule keeps it (``retentionDays: 30`` and ``keepMonthly: 12`` keep a
month of everything and a year of monthly backups). The newest completed backup is always kept.
A policy with no rule at all (``retentionDays: 0``, no GFS numbers) keeps everything.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

__all__ = ["RULES", "Candidate", "Decision", "Policy", "decide", "policy_of"]

#: The GFS rules, their ``options.retention`` names and the period each one buckets by.
RULES: tuple[tuple[str, str], ...] = (
    ("last", "keepLast"),
    ("hourly", "keepHourly"),
    ("daily", "keepDaily"),
    ("weekly", "keepWeekly"),
    ("monthly", "keepMonthly"),
    ("yearly", "keepYearly"),
)


def _bucket(rule: str) -> Callable[[datetime], Hashable]:
    if rule == "hourly":
        return lambda t: (t.year, t.month, t.day, t.hour)
    if rule == "daily":
        return lambda t: (t.year, t.month, t.day)
    if rule == "weekly":
        return lambda t: tuple(t.isocalendar())[:2]
    if rule == "monthly":
        return lambda t: (t.year, t.month)
    if rule == "yearly":
        return lambda t: t.year
    raise ValueError(rule)


@dataclass(frozen=True)
class Policy:
    """A config's retention: ``days`` (0: no age rule) and the GFS counts by rule name."""

    days: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether the policy removes anything at all."""
        return self.days > 0 or any(n > 0 for n in self.counts.values())


def policy_of(options: Any) -> Policy:
    """The policy in a config's ``options`` (a dict as stored); tolerant of odd stored values,
    since the API validated them when they were saved."""
    if not isinstance(options, dict):
        return Policy()
    days = options.get("retentionDays")
    days = days if isinstance(days, int) and not isinstance(days, bool) and days > 0 else 0
    counts: dict[str, int] = {}
    rules = options.get("retention")
    if isinstance(rules, dict):
        for rule, name in RULES:
            n = rules.get(name)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                counts[rule] = n
    return Policy(days=days, counts=counts)


@dataclass(frozen=True)
class Candidate:
    """A completed backup: its id and when it finished (timezone-aware)."""

    id: str
    when: datetime


@dataclass
class Decision:
    keep: dict[str, list[str]] = field(default_factory=dict)
    """Kept backup id → why (``"newest"``, ``"within 30 days"``, ``"last"``, ``"daily"``, …)."""
    remove: list[str] = field(default_factory=list)
    """Ids of the backups the policy removes, newest first."""


def decide(
    backups: Sequence[Candidate],
    policy: Policy,
    now: datetime,
    tz: tzinfo,
    newest: str | None = None,
) -> Decision:
    """Apply ``policy`` to one config's completed backups, in the zone ``tz``. ``newest`` names
    the backup that is always kept (default: the one that finished last)."""
    ordered = sorted(backups, key=lambda b: (b.when, b.id), reverse=True)
    decision = Decision()
    if not ordered:
        return decision
    if not policy.active:
        decision.keep = {b.id: ["no retention"] for b in ordered}
        return decision
    reasons: dict[str, list[str]] = {b.id: [] for b in ordered}
    reasons[newest if newest in reasons else ordered[0].id].append("newest")
    if policy.days > 0:
        cutoff = now - timedelta(days=policy.days)
        for b in ordered:
            if b.when >= cutoff:
                reasons[b.id].append(f"within {policy.days} days")
    for rule, _name in RULES:
        left = policy.counts.get(rule, 0)
        if left <= 0:
            continue
        if rule == "last":
            for b in ordered[:left]:
                reasons[b.id].append("last")
            continue
        bucket = _bucket(rule)
        seen: Hashable = None
        for b in ordered:
            key = bucket(b.when.astimezone(tz))
            if key == seen:
                continue
            seen = key
            reasons[b.id].append(rule)
            left -= 1
            if left == 0:
                break
    for b in ordered:
        if reasons[b.id]:
            decision.keep[b.id] = reasons[b.id]
        else:
            decision.remove.append(b.id)
    return decision
