"""The web console's encryption parts through the real ASGI app (SQLite and PostgreSQL): the
config form's Encrypt box is on offer and kept, an encrypted archive's page says plainly that the
download is encrypted and how to open it, and the Organisation recovery card (everyone sees whether
it is on; only an administrator sets it, and a pasted code is refused and not stored)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pyrage

from backend.backups.tables import BackupConfig
from backend.recovery.tables import OrganisationKey
from tests.support.api import ApiClient
from tests.support.web import Browser


async def test_the_encrypt_box_is_offered_and_kept(client: ApiClient) -> None:
    browser = Browser(client)
    await client.signup()
    agent_id, _key = await client.register_agent("laptop")
    form = await browser.get("/configs/new")
    assert "not available yet" not in form.text and "Encrypt the archive" in form.text
    assert "cannot open them; the <code>age</code> tool and your recovery code can" in form.text
    fields = {
        "name": "Docs",
        "execution_mode": "agent",
        "agent_id": agent_id,
        "sources": "/home/me/docs",
        "type": "full",
        "compression": "on",
        "compression_format": "gzip",
        "encryption": "on",
        "retention_days": "30",
    }
    r = await browser.submit("/configs/new", "/configs/new", fields)
    assert r.status_code == 303, r.text
    [row] = await BackupConfig.select(BackupConfig.options)
    options = row["options"]
    assert (options if isinstance(options, dict) else json.loads(options))["encryption"] is True


async def test_an_encrypted_archive_says_so_before_the_download(client: ApiClient) -> None:
    browser = Browser(client)
    await client.signup()
    agent_id, key = await client.register_agent("laptop")
    config = await client.create_config(agent_id, name="Docs", options={"encryption": True})
    sealed = await browser.agent_run(key, config["id"], b"age", filename="b.tar.zst.age")
    plain = await browser.agent_run(key, config["id"], b"tar", filename="c.tar.gz")
    page = await browser.get(f"/backups/{sealed['logId']}")
    assert "This archive is encrypted" in page.text
    assert "backapp-agent recovery identity --recovery-code-stdin" in page.text
    assert "age -d -i key.txt b.tar.zst.age | tar --zstd -xf -" in page.text
    assert 'aria-describedby="encrypted-hint"' in page.text
    page = await browser.get(f"/backups/{plain['logId']}")
    assert "This archive is encrypted" not in page.text


async def test_only_an_administrator_turns_organisation_recovery_on(
    client: ApiClient, services: Any
) -> None:
    admin = Browser(client)
    await client.signup()
    object.__setattr__(services.settings, "allow_signup", True)
    other = ApiClient(
        httpx.AsyncClient(transport=client.raw._transport, base_url="http://testserver.local")
    )
    await other.signup("employee@example.com", "employee-password")
    employee = Browser(other)

    page = await employee.get("/agents")
    assert "Organisation recovery is off" in page.text
    assert 'name="org_public_key"' not in page.text  # no form for an employee
    public = str(pyrage.x25519.Identity.generate().to_public())
    r = await employee.submit(
        "/agents", "/agents/organisation-recovery", {"org_public_key": public}
    )
    assert r.status_code == 403 and await OrganisationKey.count() == 0

    page = await admin.get("/agents")
    assert 'name="org_public_key"' in page.text and "recovery organisation-code" in page.text
    code = "7K3Q-M0VX-7K3Q-M0VX-7K3Q-M0VX-7K3Q-M0VX-C9D2"
    r = await admin.submit("/agents", "/agents/organisation-recovery", {"org_public_key": code})
    assert r.status_code == 400
    assert 'id="org_public_key-error"' in r.text and "never the code itself" in r.text
    assert code not in r.text and await OrganisationKey.count() == 0

    r = await admin.submit("/agents", "/agents/organisation-recovery", {"org_public_key": public})
    assert r.status_code == 303 and await OrganisationKey.count() == 1
    page = await employee.get("/agents")
    assert "Organisation recovery is on" in page.text and "owner@example.com" in page.text
    assert "whoever holds that code can open your snapshots and encrypted archives" in page.text

    r = await admin.submit("/agents", "/agents/organisation-recovery/remove", {})
    assert r.status_code == 303 and await OrganisationKey.count() == 0
