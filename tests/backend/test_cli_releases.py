"""``backapp agent-release``, the real command against SQLite and the local storage: a key made,
a build signed and added, listed and removed; the refusals (exit 2) that store nothing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from backend.cli_releases import load_private_key
from desktop_agent.engine.releases import BadRelease
from tests.support.agent_releases import OTHER_KEY, RELEASE_KEY, public_b64, signed_build
from tests.support.settings import SECRET

BACKAPP = Path(sys.executable).with_name("backapp")


class Backapp:
    """Runs the installed ``backapp`` with the settings of one throwaway server."""

    def __init__(self, tmp_path: Path, database_url: str, public_key: str | None) -> None:
        self.data = tmp_path / "data"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "BACKAPP_DATA_DIR": str(self.data),
            "BACKAPP_SECRET_KEY": SECRET.decode(),
        }
        self.env.pop("AWS_S3_BUCKET", None)
        self.env.pop("BACKAPP_RELEASE_PUBLIC_KEY", None)
        if public_key is not None:
            self.env["BACKAPP_RELEASE_PUBLIC_KEY"] = public_key

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BACKAPP), *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stored(self) -> list[str]:
        objects = self.data / "storage" / "objects" / "releases"
        return sorted(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file())

    def listed(self) -> list[dict[str, object]]:
        done = self("agent-release", "list", "--json")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


def test_keygen_sign_add_list_remove(tmp_path: Path, sqlite_url: str) -> None:
    publisher = Backapp(tmp_path, "sqlite:///nowhere/not-used.db", None)
    key_file = tmp_path / "release.pem"
    made = publisher("agent-release", "keygen", "--out", key_file)
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert len(base64.b64decode(public)) == 32 and key_file.stat().st_mode & 0o077 == 0
    again = publisher("agent-release", "keygen", "--out", key_file)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert load_private_key(key_file).public_key().public_bytes_raw() == base64.b64decode(public)

    build = tmp_path / "backapp-agent"
    build.write_bytes(b"\x7fELF frozen agent" * 1000)
    # sign needs no database: the publisher's DATABASE_URL above points nowhere.
    signed = publisher(
        "agent-release", "sign", build, "--platform", "linux", "--version", "1.4.0",
        "--key", key_file,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    signature = signed.stdout.strip()

    server = Backapp(tmp_path, sqlite_url, public)
    added = server(
        "agent-release", "add", build, "--platform", "linux", "--version", "1.4.0",
        "--signature", signature, "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    release = json.loads(added.stdout)
    assert release["objectKey"] == "releases/linux/1.4.0/backapp-agent"
    assert release["size"] == build.stat().st_size
    assert server.stored() == ["linux/1.4.0/backapp-agent"]
    assert [(r["platform"], r["version"]) for r in server.listed()] == [("linux", "1.4.0")]
    text = server("agent-release", "list")
    assert "linux" in text.stdout and "1.4.0" in text.stdout

    removed = server("agent-release", "remove", "--platform", "linux", "--version", "1.4.0")
    assert removed.returncode == 0 and "removed agent linux 1.4.0" in removed.stdout
    assert server.listed() == [] and server.stored() == []
    gone = server("agent-release", "remove", "--platform", "linux", "--version", "1.4.0")
    assert gone.returncode == 2 and "no release linux 1.4.0" in gone.stderr


def test_refusals_exit_2_and_store_nothing(tmp_path: Path, sqlite_url: str) -> None:
    server = Backapp(tmp_path, sqlite_url, public_b64())
    build, signature = signed_build(tmp_path, "darwin", "2.0.0")
    other, other_signature = signed_build(tmp_path, "darwin", "2.0.1", key=OTHER_KEY)

    def add(path: Path, platform: str, version: str, sig: str) -> subprocess.CompletedProcess[str]:
        return server(
            "agent-release", "add", path, "--platform", platform, "--version", version,
            "--signature", sig,
        )  # fmt: skip

    for args, words in [
        ((build, "amiga", "2.0.0", signature), "unknown platform 'amiga'"),
        ((build, "darwin", "two", signature), "'two' is not a version"),
        ((build, "darwin", "2.0.1", signature), "not signed by the release key"),
        ((other, "darwin", "2.0.1", other_signature), "not signed by the release key"),
        ((tmp_path / "missing", "darwin", "2.0.0", signature), "is not a file"),
    ]:
        done = add(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr and "nothing was stored" in done.stderr, done.stderr
        assert server.listed() == [] and server.stored() == []

    assert add(build, "darwin", "2.0.0", signature).returncode == 0
    before = server.listed()
    twice = add(build, "darwin", "2.0.0", signature)
    assert twice.returncode == 2 and "darwin 2.0.0 exists already" in twice.stderr
    assert server.listed() == before and server.stored() == ["darwin/2.0.0/backapp-agent"]


def test_the_built_in_key_refuses_other_builds_and_a_bad_key_setting_is_named(
    tmp_path: Path, sqlite_url: str
) -> None:
    build, signature = signed_build(tmp_path, "win32", "1.0.0")
    # Without BACKAPP_RELEASE_PUBLIC_KEY the server trusts only the project's key.
    plain = Backapp(tmp_path, sqlite_url, None)
    done = plain(
        "agent-release", "add", build, "--platform", "win32", "--version", "1.0.0",
        "--signature", signature,
    )  # fmt: skip
    assert done.returncode == 2 and "not signed by the release key" in done.stderr
    assert plain.stored() == []
    broken = Backapp(tmp_path, sqlite_url, "c2hvcnQ=")
    listed = broken("agent-release", "list")
    assert listed.returncode == 2
    assert "BACKAPP_RELEASE_PUBLIC_KEY: a release key is 32 bytes" in listed.stderr


def test_sign_refuses_bad_input(tmp_path: Path) -> None:
    publisher = Backapp(tmp_path, "sqlite:///nowhere/not-used.db", None)
    key_file = tmp_path / "k"
    key_file.write_bytes(b"not a key at all")
    build = tmp_path / "b"
    build.write_bytes(b"x")
    for args, words in [
        (("--platform", "linux", "--version", "1", "--key", key_file), "not an Ed25519 private"),
        (("--platform", "hurd", "--version", "1", "--key", key_file), "unknown platform"),
        (("--platform", "linux", "--version", "1 0", "--key", key_file), "not a version"),
        (("--platform", "linux", "--version", "1", "--key", tmp_path / "none"), "cannot read"),
    ]:
        done = publisher("agent-release", "sign", build, *args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)


@pytest.mark.parametrize("form", ["pem", "openssh", "raw", "base64"])
def test_load_private_key_forms(tmp_path: Path, form: str) -> None:
    key = RELEASE_KEY
    if form == "pem":
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    elif form == "openssh":
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    else:
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        data = raw if form == "raw" else base64.b64encode(raw) + b"\n"
    path = tmp_path / "key"
    path.write_bytes(data)
    loaded = load_private_key(path)
    assert loaded.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()


def test_load_private_key_refuses_other_kinds(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(BadRelease, match="not an Ed25519 key"):
        load_private_key(path)
