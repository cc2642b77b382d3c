"""End to end: organisation recovery with a real ``backapp serve``, a real S3 endpoint (moto) and
the real ``backapp-agent``. An administrator makes the organisation code on their own machine and
pastes its public key into the web console; an employee's machine then wraps its key for it and
encrypts its encrypted archive for it; the administrator's machine restores that archive exactly
with the code (and the ``age`` tool opens it with the identity the code gives), while a wrong or
malformed code, the employee's machine, and a pasted code change nothing. No secret is stored."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.agent_process import events_of
from tests.support.recovery import Machine, init_code, key_needles, secret_haystacks
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]


def test_an_administrator_restores_an_employees_encrypted_archive_with_the_organisation_code(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    (src / "absolute-link").unlink()  # refused by any full-archive restore; tested elsewhere
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_ALLOW_SIGNUP": "true"}
    )
    admin = server.owner()  # the first account is the administrator
    _admin_agent, admin_key = admin.register_agent("admin's desk")
    desk = Machine(tmp_path / "desk", server, admin_key)
    employee = server.owner("employee@example.com", "employee password")
    e_agent, e_key = employee.register_agent("employee's laptop")
    employee.create_config(
        e_agent,
        name="Home",
        sources=[{"path": str(src)}],
        options={"type": "full", "encryption": True},
    )
    laptop = Machine(tmp_path / "laptop", server, e_key)

    # The code is made on the administrator's machine; the server gets only the public key.
    status, out = desk.run("recovery", "organisation-code", "--json", shown=True)
    assert status == 0, out
    made = json.loads(out)
    org_code, public_key = made["organisationCode"], made["publicKey"]
    assert re.fullmatch(r"([0-9A-Z]{4}-){8}[0-9A-Z]{4}", org_code) and public_key.startswith("age1")
    form = "/agents/organisation-recovery"
    r = employee.request("POST", form, data={"org_public_key": public_key})
    assert r.status_code == 403, r.text
    r = admin.request("POST", form, data={"org_public_key": org_code})
    assert r.status_code == 400 and "never the code itself" in r.text
    assert admin.request("GET", "/api/recovery/organisation").json()["configured"] is False
    r = admin.request("POST", form, data={"org_public_key": public_key})
    assert r.status_code == 303, r.text
    page = employee.request("GET", "/agents").text
    assert "Organisation recovery is on" in page and "whoever holds that code" in page

    # The employee's machine wraps its key for it and encrypts the archive for it too.
    code = init_code(laptop)
    status, out = laptop.run("run", "--json")
    assert status == 0, out
    lines = "\n".join(x for x in out.splitlines() if x.startswith("{"))
    [done] = [e for e in events_of(lines) if e["event"] == "backup_finished"]
    backup_id = str(done["logId"])
    assert str(done["filename"]).endswith(".tar.gz.age")
    state = admin.request("GET", "/api/recovery/organisation").json()
    assert state["configured"] and state["wrappedAgents"] == 1, (state, out)
    expected = snapshot(src)

    # Bad codes and the wrong machine: clear errors, nothing written.
    target = tmp_path / "restored"
    typo = org_code[:-1] + ("0" if org_code[-1] != "0" else "1")
    for machine, bad, why, exit_status in (
        (desk, typo, "not a valid recovery code", 2),
        (desk, "hello", "not a valid recovery code", 2),
        (desk, code, "wrong recovery code", 1),
        (laptop, org_code, "no encrypted archive", 1),
    ):
        status, out = machine.run(
            "restore", backup_id, "--to", str(target), "--organisation-code-stdin", stdin=bad + "\n"
        )
        assert status == exit_status and why in out, (bad, out)
        assert not target.exists()

    # The administrator's machine restores it exactly with the organisation code.
    status, out = desk.run(
        "restore",
        backup_id,
        "--to",
        str(target),
        "--organisation-code-stdin",
        stdin=org_code + "\n",
    )
    assert status == 0, out
    assert snapshot(extracted_root(target, src)) == expected

    # And the age tool opens it with the organisation identity, without BackApp.
    age = shutil.which("age")
    status, out = desk.run(
        "recovery",
        "identity",
        "--organisation",
        "--recovery-code-stdin",
        stdin=org_code + "\n",
        shown=True,
    )
    assert status == 0 and public_key in out, out
    identity = next(x for x in out.splitlines() if x.startswith("AGE-SECRET-KEY-1"))
    if age is not None:
        key_file = tmp_path / "org-identity.txt"
        key_file.write_text(out)
        client = s3_server.client()
        [obj] = [
            o["Key"]
            for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]
            if o["Key"].endswith(".age")
        ]
        sealed = client.get_object(Bucket=s3_bucket, Key=obj)["Body"].read()
        opened = subprocess.run(
            [age, "-d", "-i", str(key_file)], input=sealed, capture_output=True, check=True
        )
        assert opened.stdout[:2] == b"\x1f\x8b"  # the gzip'd tar inside
        key_file.unlink()

    repo_key = laptop.repo_key()
    assert repo_key is not None
    needles = {
        "organisation code": org_code.encode(),
        "organisation code without dashes": org_code.replace("-", "").encode(),
        "organisation identity": identity.encode(),
        "recovery code": code.encode(),
        **key_needles("repository key", repo_key),
    }
    for name, data in secret_haystacks(server, s3_server, s3_bucket, desk, laptop).items():
        for what, needle in needles.items():
            assert needle not in data, f"{what} found in {name}"
