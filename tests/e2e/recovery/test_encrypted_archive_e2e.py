"""End to end: an encrypted ``full`` archive (``options.encryption``) with a real ``backapp
serve``, a real S3 endpoint (moto) and the real ``backapp-agent``. The object in the bucket is a
standard ``age`` file that the real ``age`` tool opens with the identity ``backapp-agent recovery
identity`` prints from the code; BackApp restores it with the machine's key, and with the code
after the keychain entry is lost; bad codes change nothing; no secret is stored anywhere."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.agent_process import events_of, setup
from tests.support.recovery import Machine, init_code, key_needles, secret_haystacks
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.trees import build_awkward_tree, extracted_root, snapshot

pytestmark = [pytest.mark.e2e]

AGE = shutil.which("age")


def _finished(out: str) -> dict[str, object]:
    lines = "\n".join(x for x in out.splitlines() if x.startswith("{"))
    [done] = [e for e in events_of(lines) if e["event"] == "backup_finished"]
    return done


@pytest.mark.parametrize("fmt", ["zstd", "gzip"])
def test_an_encrypted_full_archive_opens_with_age_and_restores_with_backapp(
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
    fmt: str,
) -> None:
    if AGE is None:
        pytest.skip("the `age` command-line tool is not installed (apt-get install age)")
    src = build_awkward_tree(tmp_path / "src")
    # A full archive's restore refuses a link that points outside the target (tested on its own
    # in tests/e2e/restore): here every member must come back.
    (src / "absolute-link").unlink()
    server = live_server_factory.start(
        s3=s3_server, bucket=s3_bucket, env={"BACKAPP_ALLOW_SIGNUP": "true"}
    )
    options = {"type": "full", "encryption": True, "compressionFormat": fmt}
    _owner, _agent_id, key, _cfgs = setup(
        server, {"name": "Home", "sources": [{"path": str(src)}], "options": options}
    )
    laptop = Machine(tmp_path / "laptop", server, key)
    code = init_code(laptop)
    status, out = laptop.run("run", "--json")
    assert status == 0, out
    done = _finished(out)
    backup_id = str(done["logId"])
    suffix = {"zstd": ".tar.zst.age", "gzip": ".tar.gz.age"}[fmt]
    assert str(done["filename"]).endswith(suffix), done
    expected = snapshot(src)
    repo_key = laptop.repo_key()
    assert repo_key is not None

    # The object is an age file: no tar, no file name in the clear.
    client = s3_server.client()
    [obj] = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        if o["Key"].endswith(suffix)
    ]
    sealed = client.get_object(Bucket=s3_bucket, Key=obj)["Body"].read()
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert b"ustar" not in sealed

    # The real age tool opens it with the identity the code gives.
    status, out = laptop.run(
        "recovery", "identity", "--recovery-code-stdin", stdin=code + "\n", shown=True
    )
    assert status == 0, out
    identity_line = next(x for x in out.splitlines() if x.startswith("AGE-SECRET-KEY-1"))
    ident_file = tmp_path / "identity.txt"
    ident_file.write_text(out)
    opened = subprocess.run(
        [AGE, "-d", "-i", str(ident_file)], input=sealed, capture_output=True, check=True
    ).stdout
    raw = opened
    if fmt == "zstd":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(opened)).read()
    by_age = tmp_path / "by-age"
    by_age.mkdir()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
        tar.extractall(by_age, filter="tar")
    assert snapshot(extracted_root(by_age, src)) == expected
    ident_file.unlink()

    # BackApp restores it with the machine's own key...
    status, out = laptop.run("restore", backup_id, "--to", str(tmp_path / "own"))
    assert status == 0, out
    assert snapshot(extracted_root(tmp_path / "own", src)) == expected

    # ...and, with the keychain entry lost, only with the right code; bad codes write nothing.
    laptop.lose_repo_key()
    target = tmp_path / "restored"
    status, out = laptop.run("restore", backup_id, "--to", str(target))
    assert status == 1 and "--recovery-code-stdin" in out and "encrypted" in out, out
    assert not target.exists()
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
        status, out = laptop.run("recovery", "identity", "--recovery-code-stdin", stdin=bad + "\n")
        assert status == exit_status and why in out and "AGE-SECRET-KEY" not in out, (bad, out)
    status, out = laptop.run(
        "restore", backup_id, "--to", str(target), "--recovery-code-stdin", stdin=code + "\n"
    )
    assert status == 0, out
    assert snapshot(extracted_root(target, src)) == expected
    assert laptop.repo_key() == repo_key

    # Nothing the server, the agent's folders or the bucket keep holds a secret.
    needles = {
        "code": code.encode(),
        "code without dashes": code.replace("-", "").encode(),
        "recovery identity": identity_line.encode(),
        **key_needles("repository key", repo_key),
    }
    for name, data in secret_haystacks(server, s3_server, s3_bucket, laptop).items():
        for what, needle in needles.items():
            assert needle not in data, f"{what} found in {name}"
