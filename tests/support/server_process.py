"""Real ``backapp serve`` processes on loopback, for end-to-end tests.

def test_x(live_server_factory, s3_server, s3_bucket):
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()                     # signed-up first user (admin), sync httpx client
    agent_id, key = owner.register_agent("laptop")
    config = owner.create_config(agent_id, sources=[{"path": "/data"}])
    r = server.agent_client(key).post("/api/agent/heartbeat", json={"version": "0.1.0"})
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.paths import ROOT
from tests.support.ports import free_port


class Owner:
    """A signed-in owner (sync httpx client that sends the CSRF header)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        token = self.http.cookies.get("csrftoken")
        headers = {"x-csrftoken": token} if token else {}
        headers.update(kw.pop("headers", {}))
        return self.http.request(method, path, headers=headers, **kw)

    def register_agent(self, name: str = "laptop", platform: str = "linux") -> tuple[str, str]:
        r = self.request("POST", "/api/agent/register", json={"name": name, "platform": platform})
        assert r.status_code == 201, r.text
        agent = r.json()["agent"]
        return agent["id"], agent["apiKey"]

    def create_config(self, agent_id: str | None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "Daily",
            "executionMode": "agent" if agent_id else "server",
            "agentId": agent_id,
            "sources": [{"path": "/tmp"}],
        }
        body.update(fields)
        r = self.request("POST", "/api/configs", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json()["config"])

    def backups(self, **params: Any) -> list[dict[str, Any]]:
        r = self.request("GET", "/api/backups", params=params)
        assert r.status_code == 200, r.text
        return list(r.json()["backups"])

    def close(self) -> None:
        self.http.close()


class LiveServer:
    def __init__(
        self, url: str, process: subprocess.Popen[bytes], env: dict[str, str], log_path: Path
    ) -> None:
        self.url = url
        self.process = process
        self.env = env
        self.log_path = log_path
        self._clients: list[Any] = []

    @property
    def data_dir(self) -> Path:
        return Path(self.env["BACKAPP_DATA_DIR"])

    def owner(
        self,
        email: str = "owner@example.com",
        password: str = "correct horse battery",
        signup: bool = True,
    ) -> Owner:
        owner = Owner(self.url)
        self._clients.append(owner)
        path = "/api/auth/signup" if signup else "/api/auth/login"
        r = owner.http.post(path, json={"email": email, "password": password})
        assert r.status_code in (200, 201), r.text
        return owner

    def agent_client(self, api_key: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, headers={"X-Agent-API-Key": api_key}, timeout=30)
        self._clients.append(client)
        return client

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class LiveServerFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[LiveServer] = []

    def start(
        self,
        *,
        s3: Any = None,
        bucket: str | None = None,
        database_url: str | None = None,
        data_dir: Path | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> LiveServer:
        """Start ``backapp serve``; local storage unless ``s3`` (the ``s3_server`` fixture) and
        ``bucket`` are given. Returns once ``/api/health`` answers."""
        port = port or free_port()
        index = len(self.servers)
        data_dir = data_dir or self.tmp_path / f"server{index}"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BACKAPP_", "AWS_")) and k != "DATABASE_URL"
        }
        full_env.update(
            {
                "BACKAPP_DATA_DIR": str(data_dir),
                "BACKAPP_HOST": "127.0.0.1",
                "BACKAPP_PORT": str(port),
                "BACKAPP_WORKERS": str(workers),
                "BACKAPP_SECRET_KEY": "live-test-secret-0123456789abcdef0123456789",
                "BACKAPP_HEARTBEAT_FLUSH_SECONDS": "0.2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if database_url:
            full_env["DATABASE_URL"] = database_url
        if s3 is not None:
            assert bucket, "pass the bucket too"
            full_env.update(
                {
                    "AWS_S3_BUCKET": bucket,
                    "AWS_S3_ENDPOINT": s3.endpoint_url,
                    "AWS_REGION": s3.region,
                    "AWS_ACCESS_KEY_ID": s3.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
                }
            )
        full_env.update(env or {})
        log_path = self.tmp_path / f"server{index}-{port}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        url = f"http://127.0.0.1:{port}"
        server = LiveServer(url, process, full_env, log_path)
        self.servers.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"backapp serve exited with {process.returncode}:\n{server.log()}"
                )
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"backapp serve did not answer within 60 s:\n{server.log()}")

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def only(owner: Owner, **match: Any) -> dict[str, Any] | None:
    found = [b for b in owner.backups() if all(b.get(k) == v for k, v in match.items())]
    return found[0] if len(found) == 1 else None


def backapp(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """The server's command line, with the running server's settings (database, bucket)."""
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
