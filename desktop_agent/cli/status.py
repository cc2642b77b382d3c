"""``backapp-agent status``: the connection, the assigned configs, their schedules and last results."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from desktop_agent import __version__
from desktop_agent.engine import (
    AgentError,
    ApiClient,
    KeyStore,
    KeyStoreError,
    RetryPolicy,
    ScheduleStore,
    StateStore,
    config_dir,
    load_settings,
    local_timezone_name,
)
from desktop_agent.engine.schedule import ScheduleError, parse_stored_schedule, resolve_timezone

from .common import EXIT_FAILED, EXIT_OK, account, load_key


def _schedule_report(
    config: Any, saved: dict[str, dict[str, Any]], zone: str | None
) -> dict[str, Any]:
    """``schedule``, ``nextRun`` and ``lastScheduledRun`` of one config, for ``status``."""
    try:
        schedule = parse_stored_schedule(config.options.schedule)
    except ScheduleError as exc:
        return {"schedule": None, "scheduleError": str(exc), "nextRun": None}
    if schedule is None:
        return {"schedule": None, "nextRun": None}
    tz = resolve_timezone(zone)
    when = schedule.next_after(datetime.now(UTC), tz)
    return {
        "schedule": schedule.describe(),
        "cron": schedule.cron,
        "nextRun": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "nextRunLocal": when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z"),
        "lastScheduledRun": saved.get(config.id, {}).get("lastRun"),
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Print the report (``--json``: one object); 1 if the server could not be reached."""
    directory = config_dir()
    settings = load_settings()
    report: dict[str, Any] = {
        "version": __version__,
        "configDir": str(directory),
        "serverUrl": settings.server_url,
        "agentId": settings.agent_id,
        "apiKey": None,
        "connection": None,
        "configs": [],
        "lastRun": None,
        "timezone": local_timezone_name(),
    }
    saved_schedules = ScheduleStore(directory).load()
    state = StateStore(directory).load()
    report["lastRun"] = state.get("lastRun")
    status = EXIT_OK
    configs: list[dict[str, Any]] = []
    try:
        key = load_key(settings)
        found = KeyStore(directory).load(account(settings.server_url or ""))
        report["apiKey"] = found[1].describe() if found else None
        assert settings.server_url
        with ApiClient(settings.server_url, key, retry=RetryPolicy(max_attempts=2)) as client:
            beat = client.heartbeat(version=__version__, platform=sys.platform)
            report["connection"] = {"ok": True, "status": beat.status}
            for assigned in client.list_configs():
                configs.append(
                    {
                        "id": assigned.id,
                        "name": assigned.name,
                        "sources": [s.path for s in assigned.sources],
                        "lastResult": state["configs"].get(assigned.id),
                        **_schedule_report(assigned, saved_schedules, report["timezone"]),
                    }
                )
    except (AgentError, KeyStoreError) as exc:
        report["connection"] = {"ok": False, "error": str(exc)}
        configs = [{"id": cid, "lastResult": r} for cid, r in state["configs"].items()]
        status = EXIT_FAILED
    report["configs"] = configs
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return status
    print(f"backapp-agent {__version__}")
    print(f"Settings:   {directory}")
    print(f"Server:     {settings.server_url or '(not configured)'}")
    if settings.agent_id:
        print(f"Agent id:   {settings.agent_id}")
    if report["apiKey"]:
        print(f"API key:    in {report['apiKey']}")
    conn = report["connection"]
    print(
        f"Connection: {'online' if conn and conn['ok'] else 'FAILED: ' + (conn or {}).get('error', '')}"
    )
    print(f"Last run:   {report['lastRun'] or 'never'}")
    print(f"Configs:    {len(configs)}")
    for c in configs:
        last = c.get("lastResult")
        if last is None:
            outcome = "never backed up by this agent"
        elif last["status"] == "completed":
            errs = f", {last['errorCount']} file errors" if last.get("errorCount") else ""
            outcome = (
                f"completed {last['finishedAt']}: {last['filename']} ({last['size']} bytes{errs})"
            )
        else:
            outcome = f"FAILED {last.get('finishedAt') or ''}: {last.get('error')}"
        print(f"  - {c.get('name') or c['id']} [{c['id']}]")
        if c.get("sources"):
            print(f"      sources: {', '.join(c['sources'])}")
        if c.get("schedule"):
            print(f"      schedule: {c['schedule']} ({report['timezone'] or 'UTC'})")
            print(f"      next:    {c['nextRunLocal']}")
        elif c.get("scheduleError"):
            print(f"      schedule: ignored: {c['scheduleError']}")
        elif "schedule" in c:
            print("      schedule: none (runs when asked)")
        print(f"      last:    {outcome}")
    return status
