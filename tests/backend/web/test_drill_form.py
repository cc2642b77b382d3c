"""The restore-drill fields of the config form (SQLite and PostgreSQL, the real ASGI app): a drill
round-trips through the form, saving the form again keeps it, bad values are shown next to their
field, and a drill on a full configuration is refused with the reason."""

from __future__ import annotations

import pytest

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


async def test_the_form_edits_the_drill_and_keeps_it_when_saved_again(browser: Browser) -> None:
    await browser.api.signup()
    agent_id, _ = await browser.api.register_agent("laptop")
    config = await browser.api.create_config(
        agent_id, options={"type": "incremental", "drill": {"every": "monthly", "sample": 7}}
    )
    edit = f"/configs/{config['id']}/edit"
    page = (await browser.get(edit)).text
    assert '<option value="monthly" selected>' in page and 'name="drill_sample"' in page
    assert 'value="7"' in page

    fields = {**FIELDS, "agent_id": agent_id, "drill_every": "monthly", "drill_sample": "7"}
    assert (await browser.submit(edit, edit, fields)).status_code == 303
    saved = (await browser.api.get(f"/api/configs/{config['id']}")).json()["config"]
    assert saved["options"]["drill"] == {"every": "monthly", "sample": 7}

    r = await browser.submit(edit, edit, {**fields, "drill_sample": "0"})
    assert r.status_code == 400 and 'id="drill_sample-error">A whole number of files' in r.text
    r = await browser.submit(edit, edit, {**fields, "drill_every": "hourly"})
    assert r.status_code == 400 and 'id="drill_every-error">' in r.text
    r = await browser.submit(edit, edit, {**fields, "type": "full"})
    assert r.status_code == 400 and 'id="drill_every-error">Restore drills sample' in r.text

    # "None" turns drills off.
    assert (await browser.submit(edit, edit, {**fields, "drill_every": ""})).status_code == 303
    saved = (await browser.api.get(f"/api/configs/{config['id']}")).json()["config"]
    assert saved["options"]["drill"] is None
