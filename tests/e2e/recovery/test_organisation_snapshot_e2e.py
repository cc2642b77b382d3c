"""End to end: an administrator restores an employee's **snapshot** with the organisation code,
with a real ``backapp serve``, a real S3 endpoint (moto) and the real ``backapp-agent`` on three
machines: the administrator's desk, the employee's laptop and a colleague's (not an administrator).

The employee's laptop wraps its repository key for the organisation key at its snapshot; the
desk then lists and restores that snapshot exactly, every chunk checked, while a wrong or
malformed code writes nothing, and the colleague's machine gets a 404 for the key and for every
object. Each key handed out is in the laptop's log, where the employee sees it, with the
administrator's address. Nothing of the employee's stays on the desk but the restored files, and
no secret is anywhere the server or the agents keep things."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.agent_process import events_of
from tests.support.recovery import Machine, files_under, init_code, key_needles, secret_haystacks
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]


def test_an_administrator_restores_an_employees_snapshot_with_the_organisation_code(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_ALLOW_SIGNUP": "true"}
    )
    admin = server.owner("admin@example.com")  # the first account is the administrator
    _desk_agent, desk_key = admin.register_agent("admin's desk")
    desk = Machine(tmp_path / "desk", server, desk_key)
    employee = server.owner("employee@example.com", "employee password")
    laptop_id, laptop_key = employee.register_agent("employee's laptop")
    employee.create_config(
        laptop_id, name="Home", sources=[{"path": str(src)}], options={"type": "incremental"}
    )
    laptop = Machine(tmp_path / "laptop", server, laptop_key)
    colleague = server.owner("colleague@example.com", "colleague password")
    _other_id, other_key = colleague.register_agent("colleague's laptop")
    other = Machine(tmp_path / "other", server, other_key)

    status, out = desk.run("recovery", "organisation-code", "--json", shown=True)
    assert status == 0, out
    made = json.loads(out)
    org_code, public_key = made["organisationCode"], made["publicKey"]
    r = admin.request("POST", "/agents/organisation-recovery", data={"org_public_key": public_key})
    assert r.status_code == 303, r.text

    # The employee's snapshot wraps the laptop's repository key for the organisation key.
    code = init_code(laptop)
    status, out = laptop.run("run", "--json")
    assert status == 0, out
    lines = "\n".join(x for x in out.splitlines() if x.startswith("{"))
    [done] = [e for e in events_of(lines) if e["event"] == "backup_finished"]
    backup_id = str(done["logId"])
    assert admin.request("GET", "/api/recovery/organisation").json()["wrappedAgents"] == 1
    expected = snapshot(src)

    def accesses() -> list[dict[str, object]]:
        r = employee.request("GET", f"/api/agents/{laptop_id}/logs", params={"limit": 500})
        assert r.status_code == 200, r.text
        return [
            x["metadata"]
            for x in r.json()["logs"]
            if (x["metadata"] or {}).get("event") == "organisation_access"
        ]

    # Bad codes and a machine of an account that is not an administrator's: nothing written,
    # nothing handed out, nothing in the employee's log.
    target = tmp_path / "restored"
    typo = org_code[:-1] + ("0" if org_code[-1] != "0" else "1")
    for machine, bad, why, exit_status in (
        (desk, typo, "not a valid recovery code", 2),
        (desk, code, "wrong recovery code", 1),
        (other, org_code, "no encrypted archive or snapshot", 1),
        (laptop, org_code, "no encrypted archive or snapshot", 1),
    ):
        status, out = machine.run(
            "restore", backup_id, "--to", str(target), "--organisation-code-stdin", stdin=bad + "\n"
        )
        assert status == exit_status and why in out, (bad, out)
        assert not target.exists()
    status, out = other.run("ls", backup_id, "--organisation-code-stdin", stdin=org_code + "\n")
    assert status == 1 and "no snapshot" in out, out
    assert str(src.name) not in out
    status, out = desk.run("ls", backup_id, "--organisation-code-stdin", stdin=code + "\n")
    assert status == 1 and "wrong recovery code" in out, out
    assert accesses() == []

    # The endpoints themselves: 404 for the key and for every object, as for an id that does not
    # exist; the ordinary read endpoints do not open another account's repository either.
    agent_api = server.agent_client(other_key)
    r = agent_api.post("/api/agent/organisation/snapshot", json={"backupId": backup_id})
    assert r.status_code == 404, r.text
    assert "wrappedKey" not in r.text
    read = {"agentId": laptop_id, "objects": [{"kind": "config", "name": "config"}]}
    for path, kw in (
        ("/api/agent/organisation/repo/read", {"json": read}),
        ("/api/agent/repo/read", {"json": read}),
    ):
        r = agent_api.post(path, **kw)
        assert r.status_code == 404 and "url" not in r.text, (path, r.text)
    for path in ("/api/agent/organisation/repo/objects", "/api/agent/repo/objects"):
        r = agent_api.get(path, params={"kind": "snapshot", "agentId": laptop_id})
        assert r.status_code == 404 and backup_id not in r.text, (path, r.text)
    r = server.agent_client(laptop_key).get(
        "/api/agent/organisation/repo/objects", params={"kind": "data", "agentId": laptop_id}
    )
    assert r.status_code == 404, r.text  # its own repository, but not as an administrator
    assert accesses() == []

    # The administrator's desk lists the snapshot, then restores it exactly.
    status, out = desk.run("ls", backup_id, "--organisation-code-stdin", stdin=org_code + "\n")
    assert status == 0, out
    assert f"{src.as_posix().lstrip('/')}/" in out, out
    status, out = desk.run(
        "restore",
        backup_id,
        "--to",
        str(target),
        "--organisation-code-stdin",
        stdin=org_code + "\n",
    )
    assert status == 0, out
    assert "with the organisation code" in out and "Checked every chunk" in out, out
    assert snapshot(extracted_root(target, src)) == expected

    # The employee sees both accesses, with the administrator's address, in the laptop's log
    # (and on its page in the web console).
    seen = accesses()
    assert len(seen) == 2, seen
    assert {m["administrator"] for m in seen} == {"admin@example.com"}
    assert {m["backupId"] for m in seen} == {backup_id}
    assert {m["administratorAgentName"] for m in seen} == {"admin's desk"}
    page = employee.request("GET", f"/agents/{laptop_id}").text
    assert "An administrator (admin@example.com)" in page

    # Nothing of the employee's stays on the desk: no repository key in its keychain, no cache of
    # the laptop's repository.
    repo_key = laptop.repo_key()
    assert repo_key is not None
    assert not desk.keychain.exists() or desk.repo_key() is None
    assert not [p for p in files_under(desk.cache) if laptop_id in str(p)]
    scratch = Path(desk.agent.env["BACKAPP_AGENT_TEMP_DIR"])
    assert scratch.is_dir() and not list(scratch.glob("backapp-organisation-*"))

    needles = {
        "organisation code": org_code.encode(),
        "organisation code without dashes": org_code.replace("-", "").encode(),
        "recovery code": code.encode(),
        **key_needles("repository key", repo_key),
    }
    for name, data in secret_haystacks(server, s3_server, s3_bucket, desk, laptop, other).items():
        for what, needle in needles.items():
            assert needle not in data, f"{what} found in {name}"
