""" "Am I safe?": how each backup configuration stands, and the verdict for the dashboard.

Pure functions over the services' structs, so the rules are tested exactly.

A config is

* ``failing``  when its newest finished backup failed;
* ``running``  when a backup of it is in progress (and the one before did not fail);
* ``never``    when it has no completed backup yet;
* ``overdue``  when its newest completed backup is older than ``OVERDUE_AFTER``;
* ``ok``       otherwise.

Scheduling is a later phase of the spec, so there is no per-config schedule to be late against yet:
until there is, "overdue" means "no good backup for a day".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from backend.schemas import BackupOut, ConfigLastBackups, ConfigOut
from backend.web._format import ago, parse_iso

__all__ = [
    "OVERDUE_AFTER",
    "ConfigRow",
    "ConfigState",
    "Reason",
    "Verdict",
    "AgentState",
    "BackupTimes",
    "Health",
    "config_health",
    "config_problem",
    "config_rows",
    "config_state",
    "verdict",
]

OVERDUE_AFTER = timedelta(hours=24)

ConfigState = Literal["ok", "running", "overdue", "failing", "never"]
Level = Literal["ok", "warn", "bad", "empty"]


class BackupTimes(Protocol):
    """What the rules read of a backup (a :class:`BackupOut`, or a narrower row)."""

    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> str: ...
    @property
    def completed_at(self) -> str | None: ...


class AgentState(Protocol):
    """What the rules read of an agent (an :class:`AgentOut`, or a narrower row)."""

    @property
    def name(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def last_seen(self) -> str | None: ...


class AgentRef(AgentState, Protocol):
    """An agent as a config's row shows it: the rules' fields and a link (an :class:`AgentOut`,
    or the narrow ``AgentBrief`` the pages read)."""

    @property
    def id(self) -> str: ...


STATE_LABELS: dict[str, str] = {
    "ok": "Up to date",
    "running": "Running",
    "overdue": "Overdue",
    "failing": "Failing",
    "never": "No backup yet",
}


def _stored_state(
    last_completed: BackupTimes | None, now: datetime, overdue_after: timedelta
) -> Literal["ok", "overdue", "never"]:
    """How old the newest verified backup is, whatever is happening right now."""
    if last_completed is None:
        return "never"
    finished = parse_iso(last_completed.completed_at) or parse_iso(last_completed.started_at)
    if finished is None or now - finished > overdue_after:
        return "overdue"
    return "ok"


def config_state(
    last: BackupTimes | None,
    last_completed: BackupTimes | None,
    now: datetime,
    overdue_after: timedelta = OVERDUE_AFTER,
) -> ConfigState:
    if last is not None and last.status == "failed":
        return "failing"
    if last is not None and last.status == "running":
        return "running"
    return _stored_state(last_completed, now, overdue_after)


@dataclass(frozen=True)
class ConfigRow:
    """One config as the dashboard and the configs page show it."""

    config: ConfigOut
    agent: AgentRef | None
    last: BackupOut | None
    last_completed: BackupOut | None
    state: ConfigState
    problem: str | None = None
    """Why nothing will run it, or why it may not run: no agent, agent deactivated or offline."""
    problem_level: Literal["warn", "bad"] = "warn"
    stored: Literal["ok", "overdue", "never"] = "ok"
    """The newest verified backup: recent, too old, or none (a running backup does not count)."""

    @property
    def safe(self) -> bool:
        """A recent verified backup exists and the newest attempt did not fail."""
        return self.stored == "ok" and self.state in ("ok", "running")

    @property
    def label(self) -> str:
        return STATE_LABELS[self.state]


def config_rows(
    configs: Sequence[ConfigOut],
    agents: Sequence[AgentRef],
    last: dict[str, ConfigLastBackups],
    now: datetime,
    overdue_after: timedelta = OVERDUE_AFTER,
) -> list[ConfigRow]:
    by_id = {a.id: a for a in agents}
    rows = []
    for config in configs:
        found = last.get(config.id)
        newest = found.last if found else None
        completed = found.last_completed if found else None
        agent = by_id.get(config.agent_id) if config.agent_id else None
        problem, problem_level = config_problem(config.execution_mode, agent, now)
        rows.append(
            ConfigRow(
                config=config,
                agent=agent,
                last=newest,
                last_completed=completed,
                state=config_state(newest, completed, now, overdue_after),
                stored=_stored_state(completed, now, overdue_after),
                problem=problem,
                problem_level=problem_level,
            )
        )
    return rows


def config_problem(
    execution_mode: str, agent: AgentState | None, now: datetime
) -> tuple[str | None, Literal["warn", "bad"]]:
    """Why nothing will run a config, or why it may not run (and how bad that is)."""
    if execution_mode != "agent":
        return None, "bad"
    if agent is None:
        return "no agent assigned: nothing runs this configuration", "bad"
    if not agent.active:
        return f"its agent “{agent.name}” is deactivated", "bad"
    if agent.status == "offline":
        return (
            f"its agent “{agent.name}” is offline (last seen {ago(agent.last_seen, now)})",
            "warn",
        )
    return None, "bad"


@dataclass(frozen=True)
class Health:
    """How one config stands, from the narrow rows the dashboard reads for every config."""

    config_id: str
    state: ConfigState
    stored: Literal["ok", "overdue", "never"]
    problem_level: Literal["warn", "bad"] | None

    @property
    def safe(self) -> bool:
        return self.stored == "ok" and self.state in ("ok", "running")

    @property
    def severity(self) -> int:
        """Worst first: failing, a blocking problem, no or an old backup, an offline agent."""
        if self.state == "failing":
            return 0
        if self.problem_level == "bad":
            return 1
        if self.stored != "ok":
            return 2
        if self.problem_level == "warn":
            return 3
        return 4 if self.state == "running" else 5

    @property
    def needs_attention(self) -> bool:
        return self.severity < 4


def config_health(
    config_id: str,
    execution_mode: str,
    agent: AgentState | None,
    last: BackupTimes | None,
    last_completed: BackupTimes | None,
    now: datetime,
    overdue_after: timedelta = OVERDUE_AFTER,
) -> Health:
    """The same rules as :func:`config_rows`, over what the dashboard reads for every config."""
    problem, level = config_problem(execution_mode, agent, now)
    return Health(
        config_id=config_id,
        state=config_state(last, last_completed, now, overdue_after),
        stored=_stored_state(last_completed, now, overdue_after),
        problem_level=level if problem else None,
    )


@dataclass(frozen=True)
class Reason:
    level: Literal["warn", "bad"]
    text: str
    href: str | None = None


@dataclass(frozen=True)
class Verdict:
    level: Level
    headline: str
    reasons: list[Reason] = field(default_factory=list)


def verdict(rows: Sequence[ConfigRow], now: datetime) -> Verdict:
    """Green only when every configuration has a recent good backup and can run again."""
    if not rows:
        return Verdict("empty", "Nothing is backed up yet")
    reasons: list[Reason] = []
    for row in rows:
        name = f"“{row.config.name}”"
        href = f"/configs/{row.config.id}"
        if row.state == "failing" and row.last is not None:
            why = f": {row.last.error}" if row.last.error else ""
            reasons.append(
                Reason(
                    "bad",
                    f"{name}: the last backup failed {ago(row.last.completed_at or row.last.started_at, now)}{why}",
                    href,
                )
            )
        elif row.stored == "never":
            running = " (the first one is running)" if row.state == "running" else ""
            reasons.append(Reason("warn", f"{name} has no completed backup yet{running}", href))
        elif row.stored == "overdue" and row.last_completed is not None:
            when = ago(row.last_completed.completed_at or row.last_completed.started_at, now)
            reasons.append(
                Reason("warn", f"{name} is overdue: the last good backup was {when}", href)
            )
        if row.problem:
            reasons.append(Reason(row.problem_level, f"{name}: {row.problem}", href))
    if any(r.level == "bad" for r in reasons):
        return Verdict("bad", "Some backups are failing", reasons)
    if reasons:
        return Verdict("warn", "Some backups need attention", reasons)
    return Verdict("ok", "All backups are up to date")
