"""End to end: the recovery code with a real ``backapp serve``, a real S3 endpoint (moto) on
loopback and the real ``backapp-agent``. A machine backs up, sets recovery up, loses its keychain
entry and restores exactly with the code; a wrong, malformed or other account's code stops the
restore with nothing written; rotation makes the old code fail and the new one work. After the
cycle, neither the code nor the repository key is in the server's data folder (its database),
its log, the agent's config and cache folders, or the bucket.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.agent_process import events_of, setup
from tests.support.recovery import WARNING, Machine, init_code, key_needles, secret_haystacks
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]


def test_recovery_code_restores_a_lost_key_and_nothing_stored_can_decrypt(
    live_server_factory: LiveServerFactory, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    src = build_awkward_tree(tmp_path / "src")
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_ALLOW_SIGNUP": "true"}
    )
    owner, agent_id, key, [cfg] = setup(
        server,
        {"name": "Home", "sources": [{"path": str(src)}], "options": {"type": "incremental"}},
    )
    laptop = Machine(tmp_path / "laptop", server, key)

    # Before recovery is set up, the snapshot runs and says once what to do.
    status, out = laptop.run("recovery", "status")
    assert status == 0 and "not set up" in out and WARNING in out, out
    status, out = laptop.run("run", "--json")
    assert status == 0, out
    assert out.count("Recovery is not set up: run `backapp-agent recovery init`") == 1, out
    original_key = laptop.repo_key()
    assert original_key is not None and len(original_key) == 32

    code = init_code(laptop)
    status, out = laptop.run("recovery", "init")
    assert status == 1 and "already set up" in out, out
    status, out = laptop.run("recovery", "status", "--json")
    assert json.loads(out) == {
        "configured": True,
        "version": 1,
        "thisAgentKeyWrapped": True,
        "thisAgentKeyVersion": 1,
    }
    (src / "after-init.txt").write_text("written after recovery was set up\n")
    status, out = laptop.run("run", "--json")
    assert status == 0 and "Recovery is not set up" not in out, out
    [finished] = [
        e
        for e in events_of("\n".join(x for x in out.splitlines() if x.startswith("{")))
        if e["event"] == "backup_finished"
    ]
    backup_id = finished["logId"]
    expected = snapshot(src)

    # The keychain entry is lost: without the code nothing can be read.
    laptop.lose_repo_key()
    target = tmp_path / "restored"
    status, out = laptop.run("restore", backup_id, "--to", str(target))
    assert status == 1 and "--recovery-code-stdin" in out, out
    assert not target.exists()

    # Bad codes: nothing is written, and each says what is wrong.
    other = server.owner("other@example.com", "another long password")
    _other_agent, other_key = other.register_agent("other's laptop")
    other_code = init_code(Machine(tmp_path / "other", server, other_key))
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    for bad, why, exit_status in (
        (typo, "not a valid recovery code", 2),
        ("hello", "not a valid recovery code", 2),
        (other_code, "wrong recovery code", 1),
    ):
        status, out = laptop.run(
            "restore", backup_id, "--to", str(target), "--recovery-code-stdin", stdin=bad + "\n"
        )
        assert status == exit_status and why in out, (bad, out)
        assert not target.exists()
        assert laptop.repo_key() is None

    # The right code (as typed by a person: lower case, spaces) restores exactly and puts the key
    # back in the keychain.
    typed = code.lower().replace("-", " ")
    status, out = laptop.run(
        "restore", backup_id, "--to", str(target), "--recovery-code-stdin", stdin=typed + "\n"
    )
    assert status == 0, out
    assert snapshot(extracted_root(target, src)) == expected
    assert laptop.repo_key() == original_key
    status, out = laptop.run("restore", backup_id, "--to", str(tmp_path / "again"))
    assert status == 0, out

    # Secrets scan: after a full backup-and-restore cycle.
    needles = {
        "code": code.encode(),
        "code without dashes": code.replace("-", "").encode(),
        "code typed": typed.encode(),
        **key_needles("repository key", original_key),
    }
    for name, data in secret_haystacks(server, s3_server, s3_bucket, laptop).items():
        for what, needle in needles.items():
            assert needle not in data, f"{what} found in {name}"

    # Rotation: a wrong current code changes nothing; the right one issues a new code.
    status, out = laptop.run(
        "recovery", "rotate", "--recovery-code-stdin", stdin=other_code + "\n", shown=True
    )
    assert status == 1 and "wrong recovery code" in out, out
    status, out = laptop.run(
        "recovery", "rotate", "--recovery-code-stdin", "--json", stdin=code + "\n", shown=True
    )
    assert status == 0, out
    rotated = json.loads(out)
    new_code = rotated["recoveryCode"]
    assert rotated["version"] == 2 and rotated["wrappedKeys"] == 1 and new_code != code
    laptop.lose_repo_key()
    target2 = tmp_path / "restored-2"
    status, out = laptop.run(
        "restore", backup_id, "--to", str(target2), "--recovery-code-stdin", stdin=code + "\n"
    )
    assert status == 1 and "wrong recovery code" in out, out
    assert not target2.exists()
    status, out = laptop.run(
        "restore", backup_id, "--to", str(target2), "--recovery-code-stdin", stdin=new_code + "\n"
    )
    assert status == 0, out
    assert snapshot(extracted_root(target2, src)) == expected
    assert laptop.repo_key() == original_key
