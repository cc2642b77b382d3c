"""The real ``backapp-agent`` as a subprocess, for the end-to-end tests: configured against a live
server in its own config folder, run once (``Agent.run``) or as a daemon (``Daemon``)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServer, Owner


def agent_command() -> list[str]:
    exe = shutil.which("backapp-agent")
    return [exe] if exe else [sys.executable, "-m", "desktop_agent"]


class Agent:
    """``backapp-agent`` configured against ``server`` with ``key``, in its own config dir."""

    def __init__(self, tmp_path: Path, server_url: str, key: str, **env: str) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKAPP_", "AWS_"))}
        self.env = {
            **base,
            "BACKAPP_AGENT_CONFIG_DIR": str(tmp_path / "agent-config"),
            "BACKAPP_AGENT_TEMP_DIR": str(tmp_path / "agent-tmp"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # headless: the 0600 file
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        done = self.run("configure", "--server", server_url, "--api-key-stdin", stdin=key + "\n")
        assert done.returncode == 0, done.stderr

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*agent_command(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*agent_command(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
        )


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def extract(data: bytes, dest: Path, name: str) -> Path:
    archive = dest.parent / name
    archive.write_bytes(data)
    dest.mkdir()
    flags = (
        ["--zstd", "-xf"]
        if name.endswith(".zst")
        else ["-xzf"]
        if name.endswith(".gz")
        else ["-xf"]
    )
    subprocess.run(["tar", *flags, str(archive), "-C", str(dest)], check=True)
    return dest


def s3_object(s3: S3Endpoint, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def setup(
    server: LiveServer, *configs: dict[str, Any]
) -> tuple[Any, str, str, list[dict[str, Any]]]:
    owner = server.owner()
    agent_id, key = owner.register_agent("e2e laptop")
    made = [owner.create_config(agent_id, **c) for c in configs]
    return owner, agent_id, key, made


class Daemon:
    """``backapp-agent daemon`` with its output read on threads (lines kept, and searchable)."""

    def __init__(self, agent: Agent, *args: str) -> None:
        self.process = agent.popen("daemon", "--json", "--tick", "0.5", *args)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        for stream, sink in (
            (self.process.stdout, self.stdout),
            (self.process.stderr, self.stderr),
        ):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            self._lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.stderr + self.stdout):
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            time.sleep(0.05)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout if line.startswith("{")]

    def output(self) -> str:
        return "".join(self.stdout) + "\n--- stderr ---\n" + "".join(self.stderr)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise


def wait_for_backup(
    owner: Owner, predicate: Any, daemon: Daemon, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for backup in owner.backups():
            if predicate(backup):
                return backup
        assert daemon.process.poll() is None, daemon.output()
        assert time.monotonic() < deadline, f"no such backup; daemon said:\n{daemon.output()}"
        time.sleep(0.2)


def source_tree(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n" * 1000)
    (root / "b.bin").write_bytes(bytes(range(256)) * 64)
    return root
