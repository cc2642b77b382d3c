"""``backapp-agent recovery init|rotate|continue|status|identity|organisation-code``: the
account's recovery code, and the organisation's (docs/recovery.md).

The code is printed once, by ``init`` and ``rotate``, and never stored: not in the config
folder, not on the server, not in a log.
"""

from __future__ import annotations

import argparse
import json

from desktop_agent.engine import (
    LOSS_WARNING,
    AgentError,
    ApiClient,
    InvalidRecoveryCode,
    Issued,
    Recovery,
    RecoveryError,
    RecoveryKey,
    RepoKeyStore,
    config_dir,
    load_settings,
    new_recovery_code,
    parse_code,
)

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    connect,
    err,
    read_code_from_stdin,
)

ORGANISATION_WARNING = (
    "Whoever holds this code can open every encrypted backup of every machine that wraps its "
    "key for it, once the server hands them the files. If it is lost, only the employees' own "
    "codes and machines open their backups."
)


def cmd_recovery(args: argparse.Namespace) -> int:
    """``backapp-agent recovery`` without a sub-command."""
    err(
        "say what to do: `backapp-agent recovery init`, `rotate`, `continue`, `status`, "
        "`identity` or `organisation-code`"
    )
    return EXIT_USAGE


def _recovery() -> tuple[Recovery, ApiClient]:
    settings = load_settings()
    client = connect(settings)
    return Recovery(
        client, RepoKeyStore(config_dir()), server_url=settings.server_url or ""
    ), client


def _show(issued: Issued, *, as_json: bool, rotated: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "recoveryCode": issued.code,
                    "version": issued.version,
                    "wrappedKeys": issued.keys,
                    "warning": LOSS_WARNING,
                },
                indent=2,
            )
        )
        return
    what = "A new recovery code is issued" if rotated else "Recovery is set up"
    print(f"{what} (version {issued.version}). Your recovery code:\n")
    print(f"    {issued.code}\n")
    print("Write it down or keep it in a password manager: it is shown only this once.")
    if rotated:
        print("The old code no longer works.")
    print(LOSS_WARNING)


def cmd_init(args: argparse.Namespace) -> int:
    recovery, client = _recovery()
    try:
        with client:
            issued = recovery.init()
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    _show(issued, as_json=args.json, rotated=False)
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    old = read_code_from_stdin()
    if old is None:
        return EXIT_USAGE
    recovery, client = _recovery()
    try:
        with client:
            issued = recovery.rotate(old)
    except InvalidRecoveryCode as exc:
        err(str(exc))
        return EXIT_USAGE
    except (RecoveryError, AgentError) as exc:
        err(str(exc))
        return EXIT_FAILED
    _show(issued, as_json=args.json, rotated=True)
    return EXIT_OK


def cmd_identity(args: argparse.Namespace) -> int:
    """Print the age identity of the account's (or the organisation's) recovery code."""
    code = read_code_from_stdin()
    if code is None:
        return EXIT_USAGE
    try:
        parse_code(code)  # a typo is told before the server is asked
    except InvalidRecoveryCode as exc:
        err(str(exc))
        return EXIT_USAGE
    recovery, client = _recovery()
    try:
        with client:
            key = (
                recovery.organisation_identity(code)
                if args.organisation
                else recovery.identity(code)
            )
    except (RecoveryError, AgentError) as exc:
        err(str(exc))
        return EXIT_FAILED
    whose = "the organisation's" if args.organisation else "this account's"
    print(f"# BackApp recovery identity ({whose}): a secret, delete this file after use")
    print(f"# public key: {key.recipient}")
    print(key.identity_text())
    return EXIT_OK


def cmd_organisation_code(args: argparse.Namespace) -> int:
    """Make an organisation recovery code here (no server) and print it once with its public
    key."""
    code = new_recovery_code()
    recipient = RecoveryKey.organisation(code).recipient
    if args.json:
        print(
            json.dumps(
                {"organisationCode": code, "publicKey": recipient, "warning": ORGANISATION_WARNING},
                indent=2,
            )
        )
        return EXIT_OK
    print("A new organisation recovery code:\n")
    print(f"    {code}\n")
    print("Write it down or keep it in a password manager: it is shown only this once.")
    print("Paste this public key into the web console (Agents page, Organisation recovery):\n")
    print(f"    {recipient}\n")
    print(ORGANISATION_WARNING)
    return EXIT_OK


def cmd_continue(args: argparse.Namespace) -> int:
    code = read_code_from_stdin()
    if code is None:
        return EXIT_USAGE
    recovery, client = _recovery()
    try:
        with client:
            done = recovery.continue_from(code, args.from_agent)
    except InvalidRecoveryCode as exc:
        err(str(exc))
        return EXIT_USAGE
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "fromAgentId": done.from_agent_id,
                    "fromAgentName": done.from_agent_name,
                    "snapshots": done.snapshots,
                },
                indent=2,
            )
        )
        return EXIT_OK
    name = done.from_agent_name or done.from_agent_id
    print(
        f"This machine continues the snapshot repository of “{name}” ({done.snapshots} "
        "snapshot(s) so far): its next snapshot uploads only what differs. The old machine's "
        "snapshots stay restorable here; the old machine can no longer add to it."
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    recovery, client = _recovery()
    try:
        with client:
            info = recovery.status()
    except AgentError as exc:
        err(str(exc))
        return EXIT_FAILED
    mine = info.configured and info.agent_key_version == info.version
    if args.json:
        print(
            json.dumps(
                {
                    "configured": info.configured,
                    "version": info.version,
                    "thisAgentKeyWrapped": mine,
                    "thisAgentKeyVersion": info.agent_key_version,
                },
                indent=2,
            )
        )
        return EXIT_OK
    if not info.configured:
        print("Recovery: not set up. Run `backapp-agent recovery init` and keep the code.")
        print(LOSS_WARNING)
        return EXIT_OK
    print(f"Recovery: set up (version {info.version}).")
    print(
        "This machine's repository key: "
        + (
            "stored on the server, wrapped for the current code."
            if mine
            else "not stored for the current code yet (the next snapshot stores it)."
        )
    )
    return EXIT_OK
