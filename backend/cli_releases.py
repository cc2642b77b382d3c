"""``backapp agent-release``: publishing signed agent builds (docs/releases.md).

backapp agent-release keygen --out KEYFILE
backapp agent-release sign FILE --platform P --version V --key KEYFILE
backapp agent-release add FILE --platform P --version V --signature SIG [--json]
backapp agent-release list [--json]
backapp agent-release remove --platform P --version V

``keygen`` and ``sign`` run on the publisher's own machine: they need no server, database or
bucket, and the private key never has to reach the server. ``add``, ``list`` and ``remove`` run
with the server's settings (database and storage), like ``backapp maintenance``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backend.settings import Settings
from desktop_agent.engine.releases import PLATFORMS, BadRelease, sign_release

__all__ = ["add_commands", "load_private_key"]

T = TypeVar("T")

#: Exit status of a refusal (bad input, nothing changed), as for argparse's own errors.
EXIT_REFUSED = 2


def _fail(message: str, status: int = EXIT_REFUSED) -> int:
    print(f"backapp: {message}", file=sys.stderr)
    return status


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) or OpenSSH file, or its raw 32 bytes (as
    bytes or base64). An encrypted key asks for its passphrase on the terminal."""
    data = path.read_bytes()
    key: object
    if data.lstrip().startswith(b"-----BEGIN"):
        loader: Callable[[bytes, bytes | None], object]
        if b"OPENSSH PRIVATE KEY" in data:
            loader = serialization.load_ssh_private_key
        else:
            loader = serialization.load_pem_private_key
        try:
            key = loader(data, None)
        except TypeError:  # encrypted: a passphrase is needed
            if not sys.stdin.isatty():
                raise BadRelease(f"{path} is encrypted; run sign on a terminal") from None
            passphrase = getpass.getpass(f"Passphrase for {path}: ").encode()
            try:
                key = loader(data, passphrase)
            except ValueError as exc:
                raise BadRelease(f"could not open {path}: {exc}") from None
        except ValueError as exc:
            raise BadRelease(f"{path} is not a private key: {exc}") from None
    else:
        raw = data
        if len(raw) != 32:
            try:
                raw = base64.b64decode(data.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
        if len(raw) != 32:
            raise BadRelease(f"{path} is not an Ed25519 private key (PEM, OpenSSH or 32 bytes)")
        key = Ed25519PrivateKey.from_private_bytes(raw)
    if not isinstance(key, Ed25519PrivateKey):
        raise BadRelease(f"{path} is not an Ed25519 key")
    return key


def _public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new release key pair: the private key into ``--out`` (0600, never overwritten), the
    public key (base64) on standard output."""
    out = Path(args.out)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _fail(f"{out} exists already; a release key is never overwritten")
    except OSError as exc:
        return _fail(f"cannot write {out}: {exc}")
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    print(_public_b64(key))
    print(
        f"private key written to {out}: keep it off the server. Agents (and the server) trust "
        "this key when BACKAPP_RELEASE_PUBLIC_KEY is set to the line above.",
        file=sys.stderr,
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Print the signature of one build (base64)."""
    from packaging.version import InvalidVersion, Version

    path = Path(args.file)
    if args.platform not in PLATFORMS:
        return _fail(f"unknown platform {args.platform!r} (one of: {', '.join(PLATFORMS)})")
    try:
        Version(args.version)
    except InvalidVersion:
        return _fail(f"{args.version!r} is not a version (PEP 440, such as 1.2.3)")
    try:
        key = load_private_key(Path(args.key))
        sha256, size = _digest(path)
        print(sign_release(key, args.platform, args.version, sha256, size))
    except BadRelease as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read {exc.filename}: {exc.strerror}")
    return 0


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Bind the tables to the configured database, build the release service, run ``work``."""
    from backend.db import run_on_database
    from backend.services.container import make_storage
    from backend.services.releases import ReleaseService

    return run_on_database(
        settings.database_url, lambda: work(ReleaseService(settings, make_storage(settings)))
    )


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if settings.auto_migrate:
        args.migrate(True)  # a server that predates releases gets the table first
    return settings


def cmd_add(args: argparse.Namespace) -> int:
    """Check a build's signature and store it; refusals (exit 2) store nothing."""
    from backend.errors import DomainError
    from backend.storage import ObjectStoreError

    settings = _settings(args)

    async def work(releases: Any) -> Any:
        return await releases.add(Path(args.file), args.platform, args.version, args.signature)

    try:
        release = _run(settings, work)
    except DomainError as exc:
        return _fail(f"{exc.detail}; nothing was stored")
    except ObjectStoreError as exc:
        return _fail(f"storage refused the build: {exc}; nothing was stored", 1)
    if args.json:
        print(json.dumps(release.to_json(), indent=2))
    else:
        print(
            f"added agent {release.platform} {release.version} ({release.size} bytes, "
            f"sha256 {release.sha256}) at {release.object_key}"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """The stored releases, by platform, newest first."""
    settings = _settings(args)

    async def work(releases: Any) -> list[Any]:
        return list(await releases.releases())

    found = _run(settings, work)
    if args.json:
        print(json.dumps([r.to_json() for r in found], indent=2))
    elif not found:
        print("no agent release stored yet")
    for r in [] if args.json else found:
        state = "" if r.object_key else "  (add did not finish: remove it and add again)"
        print(f"{r.platform:<7} {r.version:<16} {r.size:>12} bytes  sha256 {r.sha256}{state}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Delete a release and its build from the bucket."""
    from backend.errors import DomainError

    settings = _settings(args)

    async def work(releases: Any) -> Any:
        return await releases.remove(args.platform, args.version)

    try:
        release = _run(settings, work)
    except DomainError as exc:
        return _fail(exc.detail)
    print(f"removed agent {release.platform} {release.version}")
    return 0


def add_commands(sub: Any, *, migrate: Callable[[bool], None]) -> None:
    """Add ``agent-release keygen|sign|add|list|remove`` to the ``backapp`` subcommands;
    ``migrate(quiet)`` applies the pending migrations."""
    release = sub.add_parser(
        "agent-release", help="publish signed agent builds that agents update themselves to"
    )
    release_sub = release.add_subparsers(dest="release_command", required=True)

    keygen = release_sub.add_parser(
        "keygen", help="make a release key pair (no server needed); prints the public key"
    )
    keygen.add_argument("--out", required=True, metavar="KEYFILE", help="private key file")
    keygen.set_defaults(func=cmd_keygen)

    def build_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--platform", required=True, help=f"one of {', '.join(PLATFORMS)}")
        p.add_argument("--version", required=True, help="the build's version (PEP 440)")

    sign = release_sub.add_parser(
        "sign", help="print a build's signature (on the publisher's machine; no server needed)"
    )
    sign.add_argument("file", metavar="FILE", help="the frozen agent build")
    build_args(sign)
    sign.add_argument(
        "--key", required=True, metavar="KEYFILE", help="Ed25519 private key (PEM, OpenSSH, raw)"
    )
    sign.set_defaults(func=cmd_sign)

    add = release_sub.add_parser(
        "add", help="check a build's signature and store it for agents of that platform"
    )
    add.add_argument("file", metavar="FILE", help="the frozen agent build")
    build_args(add)
    add.add_argument("--signature", required=True, help="what agent-release sign printed")
    add.add_argument("--json", action="store_true", help="print the release as JSON")
    add.set_defaults(func=cmd_add, migrate=migrate)

    listing = release_sub.add_parser("list", help="list the stored agent releases")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(func=cmd_list, migrate=migrate)

    remove = release_sub.add_parser("remove", help="delete a release and its build")
    build_args(remove)
    remove.set_defaults(func=cmd_remove, migrate=migrate)
