"""Helpers of the recovery end-to-end tests: a machine (an agent in its own folders, with a file
keychain), setting recovery up, and the secrets scan of everything the server and agent keep."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from tests.support.agent_process import Agent
from tests.support.paths import ROOT
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer

WARNING = (
    "BackApp cannot read your backups. If you lose every machine and this code, the backups "
    "cannot be restored."
)
REPO_SERVICE = "backapp-repository"


class Machine:
    """One agent in its own folders, with its keychain in a file outside its config folder."""

    def __init__(self, tmp_path: Path, server: LiveServer, key: str) -> None:
        self.keychain = tmp_path / "keychain.json"
        self.config = tmp_path / "agent-config"
        self.cache = tmp_path / "agent-cache"
        self.outputs: list[str] = []
        self.agent = Agent(
            tmp_path,
            server.url,
            key,
            BACKAPP_CACHE_DIR=str(self.cache),
            PYTHON_KEYRING_BACKEND="tests.support.keyring.FileKeyring",
            BACKAPP_TEST_KEYRING_FILE=str(self.keychain),
            PYTHONPATH=str(ROOT),
        )

    def run(self, *args: str, stdin: str | None = None, shown: bool = False) -> tuple[int, str]:
        """The exit status and stdout + stderr; ``shown``: the output shows the code on purpose
        (init, rotate) and is kept out of the secrets scan."""
        done = self.agent.run(*args, stdin=stdin)
        out = done.stdout + done.stderr
        if not shown:
            self.outputs.append(out)
        return done.returncode, out

    def repo_key(self) -> bytes | None:
        items = json.loads(self.keychain.read_text())
        text = next((v for k, v in items.items() if k.startswith(REPO_SERVICE + "\n")), None)
        return base64.b64decode(text) if text else None

    def lose_repo_key(self) -> None:
        items = json.loads(self.keychain.read_text())
        kept = {k: v for k, v in items.items() if not k.startswith(REPO_SERVICE + "\n")}
        assert len(kept) == len(items) - 1
        self.keychain.write_text(json.dumps(kept))


def init_code(machine: Machine) -> str:
    status, out = machine.run("recovery", "init", "--json", shown=True)
    assert status == 0, out
    body = json.loads(out)
    assert body["warning"] == WARNING and body["version"] == 1
    assert re.fullmatch(r"([0-9A-Z]{4}-){8}[0-9A-Z]{4}", body["recoveryCode"]), body
    return str(body["recoveryCode"])


def files_under(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders if f.exists() for p in f.rglob("*") if p.is_file()}


def secret_haystacks(
    server: LiveServer, s3: S3Endpoint, bucket: str, *machines: Machine
) -> dict[str, bytes]:
    """Every place a secret must never be: the server's data folder (its database) and log, each
    machine's config and cache folders and command output (but the once-shown code), and every
    object of the bucket (its key and its bytes)."""
    haystacks: dict[str, bytes] = {
        **{f"server file {p}": d for p, d in files_under(server.data_dir).items()},
        "server log": server.log().encode(),
    }
    for m in machines:
        haystacks.update({f"agent file {p}": d for p, d in files_under(m.config, m.cache).items()})
        haystacks.update({f"agent output {n}": o.encode() for n, o in enumerate(m.outputs)})
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            haystacks[f"bucket {obj['Key']}"] = body + obj["Key"].encode()
    assert any("backapp.sqlite3" in name for name in haystacks), list(haystacks)
    assert any(name.startswith("bucket ") for name in haystacks)
    return haystacks


def key_needles(name: str, key: bytes) -> dict[str, bytes]:
    """``key`` as raw bytes, base64, base64url and hex."""
    return {
        name: key,
        f"{name} base64": base64.b64encode(key),
        f"{name} base64url": base64.urlsafe_b64encode(key).rstrip(b"="),
        f"{name} hex": key.hex().encode(),
    }
