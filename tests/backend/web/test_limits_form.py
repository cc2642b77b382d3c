"""The agent page's Bandwidth form (SQLite and PostgreSQL, the real ASGI app): limits and a
schedule window round-trip, bad values are shown next to their field and change nothing, and the
config form keeps options only the API sets."""

from __future__ import annotations

import pytest

from tests.support.api import ApiClient
from tests.support.web import Browser


@pytest.fixture
def browser(client: ApiClient) -> Browser:
    return Browser(client)


async def test_the_agent_page_sets_limits_and_refuses_bad_ones(browser: Browser) -> None:
    await browser.api.signup()
    agent_id, key = await browser.api.register_agent("laptop")
    page = f"/agents/{agent_id}"
    action = f"/agents/{agent_id}/limits"
    shown = await browser.get(page)
    assert "No limits" in shown.text and 'name="limit_upload"' in shown.text

    fields = {
        "limit_upload": "",
        "limit_download": "50",
        "window_days": "weekdays",
        "window_from": "09:00",
        "window_to": "18:00",
        "window_upload": "10",
        "window_download": "",
        "pause_battery": "1",
    }
    assert (await browser.submit(page, action, fields)).status_code == 303
    agent = (await browser.api.get(f"/api/agents/{agent_id}")).json()["agent"]
    assert agent["limits"] == {
        "upload": None,
        "download": 50.0,
        "schedule": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "from": "09:00",
                "to": "18:00",
                "upload": 10.0,
                "download": None,
            }
        ],
        "pauseOnMetered": False,
        "pauseOnBattery": True,
    }
    shown = (await browser.get(page)).text
    assert "upload 10 Mbit/s, download unlimited on mon,tue,wed,thu,fri 09:00-18:00" in shown
    assert '<option value="weekdays" selected>' in shown and 'value="50"' in shown
    beat = await browser.api.agent_post(key, "/api/agent/heartbeat", {})
    assert beat.json()["limits"] == agent["limits"] and beat.json()["configLimits"] == {}

    for bad, field, words in (
        ({"limit_upload": "0"}, "limit_upload", "more than 0 Mbit/s"),
        ({"limit_upload": "-5"}, "limit_upload", "more than 0 Mbit/s"),
        ({"limit_download": "fast"}, "limit_download", "a number of Mbit/s"),
        ({"window_from": "25:00"}, "window_from", "HH:MM"),
        ({"window_to": "09:00"}, "window_from", "same time"),
    ):
        r = await browser.submit(page, action, {**fields, **bad})
        assert r.status_code == 400, (bad, r.text[:300])
        assert f'id="{field}-error">' in r.text and words in r.text, bad
    after = (await browser.api.get(f"/api/agents/{agent_id}")).json()["agent"]
    assert after["limits"] == agent["limits"]  # nothing changed

    # Clearing every field removes the limits.
    empty = dict.fromkeys(fields, "")
    assert (await browser.submit(page, action, empty)).status_code == 303
    assert (await browser.api.get(f"/api/agents/{agent_id}")).json()["agent"]["limits"] is None


async def test_the_api_refuses_bad_limits_and_commands(browser: Browser) -> None:
    api = browser.api
    await api.signup()
    agent_id, key = await api.register_agent("laptop")
    for body, words in (
        ({"upload": 0}, "limits.upload: a limit must be more than 0"),
        ({"download": -1}, "limits.download: a limit must be more than 0"),
        ({"schedule": [{"days": "someday", "from": "09:00", "to": "10:00"}]}, "not a day"),
        ({"schedule": [{"days": "mon", "from": "9", "to": "10:00"}]}, "HH:MM"),
        ({"uplod": 5}, "unknown field 'uplod'"),
    ):
        r = await api.patch(f"/api/agents/{agent_id}", json={"limits": body})
        assert r.status_code == 400 and words in r.json()["detail"], (body, r.text)
    assert (await api.get(f"/api/agents/{agent_id}")).json()["agent"]["limits"] is None

    config = await api.create_config(agent_id, options={"limits": {"upload": 2}})
    assert config["options"]["limits"]["upload"] == 2.0
    beat = await api.agent_post(key, "/api/agent/heartbeat", {})
    assert beat.json()["configLimits"] == {config["id"]: config["options"]["limits"]}
    r = await api.patch(f"/api/configs/{config['id']}", json={"options": {"limits": {"upload": 0}}})
    assert r.status_code == 400 and "more than 0" in r.text
    r = await api.patch(
        f"/api/configs/{config['id']}", json={"options": {"commandTimeoutSeconds": 0}}
    )
    assert r.status_code == 400
    assert (await api.get(f"/api/configs/{config['id']}")).json()["config"]["options"] == config[
        "options"
    ]

    # Commands run on agents' machines, never on the server's own host.
    r = await api.post(
        "/api/configs",
        json={
            "name": "Server",
            "executionMode": "server",
            "sources": [{"path": "/srv"}],
            "options": {"preCommand": "id"},
        },
    )
    assert r.status_code == 400 and r.json()["field"] == "preCommand", r.text

    # The config form edits the plain limits and the commands, and keeps the rest the API set.
    r = await api.patch(
        f"/api/configs/{config['id']}",
        json={
            "options": {
                "preCommand": "zfs snapshot tank@backapp",
                "postCommand": "zfs destroy tank@backapp",
                "limits": {"upload": 2, "pauseOnBattery": True},
                "snapshot": "vss",
            }
        },
    )
    assert r.status_code == 200, r.text
    edit = f"/configs/{config['id']}/edit"
    shown = (await browser.get(edit)).text
    assert "zfs snapshot tank@backapp</textarea>" in shown and 'value="2"' in shown
    fields = {
        "name": "Docs",
        "execution_mode": "agent",
        "agent_id": agent_id,
        "sources": "/home/me/Documents",
        "excludes": "",
        "type": "full",
        "compression_format": "gzip",
        "retention_days": "30",
        "limit_upload": "3",
        "pre_command": "zfs snapshot tank@backapp",
        "post_command": "",
        "command_timeout": "120",
    }
    assert (await browser.submit(edit, edit, fields)).status_code == 303
    saved = (await api.get(f"/api/configs/{config['id']}")).json()["config"]["options"]
    assert saved["preCommand"] == "zfs snapshot tank@backapp" and saved["postCommand"] is None
    assert saved["commandTimeoutSeconds"] == 120 and saved["snapshot"] == "vss"
    assert saved["limits"]["upload"] == 3.0 and saved["limits"]["pauseOnBattery"] is True
    for bad, field in (
        ({"limit_upload": "0"}, "limit_upload"),
        ({"limit_download": "lots"}, "limit_download"),
        ({"command_timeout": "0"}, "command_timeout"),
    ):
        r = await browser.submit(edit, edit, {**fields, **bad})
        assert r.status_code == 400 and f'id="{field}-error">' in r.text, bad
    after = (await api.get(f"/api/configs/{config['id']}")).json()["config"]["options"]
    assert after == saved


async def test_the_api_sets_parallel_backups_and_refuses_bad_ones(browser: Browser) -> None:
    api = browser.api
    await api.signup()
    agent_id, key = await api.register_agent("workstation")
    assert (await api.get(f"/api/agents/{agent_id}")).json()["agent"]["parallelBackups"] is None
    r = await api.patch(f"/api/agents/{agent_id}", json={"parallelBackups": 2})
    assert r.status_code == 200 and r.json()["agent"]["parallelBackups"] == 2, r.text
    beat = await api.agent_post(key, "/api/agent/heartbeat", {})
    assert beat.json()["parallelBackups"] == 2
    for bad, words in (
        (0, "parallelBackups: must be a whole number from 1 to 4, not '0'"),
        (5, "parallelBackups: must be a whole number from 1 to 4, not '5'"),
        (-1, "not '-1'"),
        ("two", "parallelBackups"),
        (2.5, "parallelBackups"),
        (True, "parallelBackups"),
    ):
        r = await api.patch(f"/api/agents/{agent_id}", json={"parallelBackups": bad})
        assert r.status_code == 400 and words in r.json()["detail"], (bad, r.text)
    # A bad value beside a good change changes nothing either.
    r = await api.patch(
        f"/api/agents/{agent_id}", json={"limits": {"upload": 5}, "parallelBackups": 9}
    )
    assert r.status_code == 400, r.text
    agent = (await api.get(f"/api/agents/{agent_id}")).json()["agent"]
    assert agent["parallelBackups"] == 2 and agent["limits"] is None
    # ``null`` gives the choice back to the machine; other changes leave it alone.
    r = await api.patch(f"/api/agents/{agent_id}", json={"name": "desk"})
    assert r.json()["agent"]["parallelBackups"] == 2
    r = await api.patch(f"/api/agents/{agent_id}", json={"parallelBackups": None})
    assert r.status_code == 200 and r.json()["agent"]["parallelBackups"] is None
    beat = await api.agent_post(key, "/api/agent/heartbeat", {})
    assert beat.json()["parallelBackups"] is None
