"""The retention fields of the config form and the "what-if" preview behind it (SQLite and
PostgreSQL, the real ASGI app): the GFS rules round-trip through the form, bad numbers are shown
next to their field, and the preview names exactly the backups a policy would remove without
removing anything."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backend.agents.tables import Agent
from backend.backups.tables import BackupLog
from tests.support.api import ApiClient
from tests.support.web import Browser

FIELDS = {
    "name": "Docs",
    "execution_mode": "agent",
    "sources": "/home/me/Documents",
    "excludes": "",
    "type": "incremental",
    "compression_format": "gzip",
    "retention_days": "0",
}


@pytest.fixture
def browser(client: ApiClient) -> Browser:
    return Browser(client)


async def test_the_form_edits_the_rules_and_keeps_them_when_saved_again(browser: Browser) -> None:
    await browser.api.signup()
    agent_id, _ = await browser.api.register_agent("laptop")
    config = await browser.api.create_config(
        agent_id, options={"retention": {"keepDaily": 7, "keepMonthly": 12}}
    )
    edit = f"/configs/{config['id']}/edit"
    page = (await browser.get(edit)).text
    assert 'id="keep_daily" name="keep_daily"' in page and 'value="7"' in page
    assert 'id="keep_monthly"' in page and 'value="12"' in page
    assert 'data-preview-url="/api/configs/' in page

    # Saving the form as shown keeps the rules (the form sends every option).
    fields = {**FIELDS, "agent_id": agent_id, "keep_daily": "7", "keep_monthly": "12"}
    r = await browser.submit(edit, edit, fields)
    assert r.status_code == 303, r.text
    saved = (await browser.api.get(f"/api/configs/{config['id']}")).json()["config"]
    assert saved["options"]["retention"] == {
        "keepLast": 0,
        "keepHourly": 0,
        "keepDaily": 7,
        "keepWeekly": 0,
        "keepMonthly": 12,
        "keepYearly": 0,
    }

    r = await browser.submit(edit, edit, {**fields, "keep_weekly": "-2", "keep_last": "x"})
    assert r.status_code == 400
    assert 'id="keep_weekly-error">A whole number from 0 to 10000' in r.text
    assert 'id="keep_last-error">' in r.text

    # Clearing every rule removes the policy.
    cleared = {**fields, "keep_daily": "", "keep_monthly": "0"}
    assert (await browser.submit(edit, edit, cleared)).status_code == 303
    saved = (await browser.api.get(f"/api/configs/{config['id']}")).json()["config"]
    assert saved["options"]["retention"] is None


async def test_the_preview_names_what_a_policy_would_remove_and_changes_nothing(
    browser: Browser,
) -> None:
    await browser.api.signup()
    agent_id, key = await browser.api.register_agent("laptop")
    await Agent.update({Agent.timezone: "America/New_York"}).where(Agent.id == uuid.UUID(agent_id))
    config = await browser.api.create_config(agent_id, options={"retentionDays": 0})
    # Five backups, one a day, the newest 23 hours ago (never on a day boundary, whatever the
    # time the test runs at: "the last 3 days" then holds exactly three).
    base = datetime.now(UTC) + timedelta(hours=1)
    ids = []
    for age in range(5):
        done = await browser.agent_run(key, config["id"], filename=f"b{age}.tar.gz")
        when = base - timedelta(days=age + 1)
        await BackupLog.update(
            {BackupLog.started_at: when - timedelta(minutes=1), BackupLog.completed_at: when}
        ).where(BackupLog.id == uuid.UUID(done["logId"]))
        ids.append(done["logId"])

    url = f"/api/configs/{config['id']}/retention-preview"
    r = await browser.api.post(url, json={"retention": {"keepLast": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "America/New_York"
    assert [b["id"] for b in body["remove"]] == ids[2:]
    assert [b["id"] for b in body["keep"]] == ids[:2]
    assert body["keep"][0]["reasons"] == ["newest", "last"]

    # retentionDays from the body, rules from the config (none): 3 days keep three.
    r = await browser.api.post(url, json={"retentionDays": 3})
    assert [b["id"] for b in r.json()["remove"]] == ids[3:]
    # The config's own policy (keep everything) removes nothing.
    assert (await browser.api.post(url, json={})).json()["remove"] == []

    r = await browser.api.post(url, json={"retention": {"keepLast": -1}})
    assert r.status_code == 400 and "keepLast" in r.json()["detail"]
    r = await browser.api.post(url, json={"retention": {"keepAll": 1}})
    assert r.status_code == 400
    other = f"/api/configs/{uuid.uuid4()}/retention-preview"
    assert (await browser.api.post(other, json={})).status_code == 404

    statuses = {
        b["id"]: b["status"] for b in (await browser.api.get("/api/backups")).json()["backups"]
    }
    assert [statuses[i] for i in ids] == ["completed"] * 5
