"""What each ``backapp-agent`` command takes: its options and help, argparse only.

A command's function is named by a ``"module:function"`` string and imported when the command runs
(``Command``), so building the parser (and ``--help``) loads none of the engine's backup, restore
or network code, and each command loads only what it uses. Adding a command is its ``add_command``
here, in a group's ``add_*`` function listed in ``parser.COMMAND_GROUPS``, and its function in a
command module.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from desktop_agent.engine import LOSS_WARNING, MAX_PARALLEL_BACKUPS

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""Where a group adds its sub-commands (see ``parser``)."""

Handler: TypeAlias = Callable[[argparse.Namespace], int]
"""What runs a command: the parsed arguments in, the exit status out."""


@dataclass(frozen=True)
class Command:
    """The function ``target`` (``"package.module:function"``, a ``Handler``), imported on the
    first call; ``main`` calls it as ``args.func(args)``."""

    target: str

    def __call__(self, args: argparse.Namespace) -> int:
        return self.load()(args)

    def load(self) -> Handler:
        module, _, name = self.target.partition(":")
        handler: Handler = getattr(importlib.import_module(module), name)
        return handler


def add_command(
    commands: Commands,
    name: str,
    target: str,
    *,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A new sub-command ``name`` that runs the function ``target`` (``"module:function"``; no
    abbreviated options: an option added later must never change what an old abbreviation meant).
    Like every command it takes ``-v``/``-vv`` after its name too (``backapp-agent status -v``);
    see ``common.verbosity``."""
    parser = commands.add_parser(name, help=help, description=description, allow_abbrev=False)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest="command_verbose",
        help="more log output (-vv: debug)",
    )
    parser.set_defaults(func=Command(target))
    return parser


def add_listing_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The options a listing of ``what`` (backups, snapshots) takes: one config, those of an agent
    this machine replaces, how many, and JSON."""
    parser.add_argument("--config", metavar="ID", dest="config_id", help="only this config")
    parser.add_argument(
        "--agent",
        metavar="ID",
        dest="agent_id",
        help=f"the {what} made by this agent, one this machine replaces",
    )
    parser.add_argument(
        "--limit", metavar="N", type=int, default=100, help=f"at most N {what} (default 100)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# -- argument types ------------------------------------------------------------------------------


class _RejectKeyArgument(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "the API key is never taken from the command line (it would land in your shell history "
            "and in `ps`): leave it out to be prompted, or pipe it in with --api-key-stdin"
        )


def _limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of Mbit/s: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("a limit is a number of Mbit/s, 0 for none")
    return value


def _parallel(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_PARALLEL_BACKUPS:
        raise argparse.ArgumentTypeError(
            f"parallel backups must be between 1 and {MAX_PARALLEL_BACKUPS}, not {value}"
        )
    return value


def percent(text: str) -> float:
    """``--read-data``: a share from 0 to 100 (``10`` or ``10%``)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text}: give a share from 0 to 100")
    return value


def sample_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text}: give a number of files from 1 to 1000")
    return value


# -- the commands, in the order of --help ---------------------------------------------------------


def add_configure(commands: Commands) -> None:
    """Add ``configure``."""
    configure = add_command(
        commands,
        "configure",
        "desktop_agent.cli.configure:cmd_configure",
        help="set the server and the API key",
        description="Store the server URL and settings, and the API key in the OS keychain.",
    )
    configure.add_argument(
        "--server", metavar="URL", help="the BackApp server, e.g. https://backapp.example.org"
    )
    configure.add_argument(
        "--api-key-stdin", action="store_true", help="read the API key from standard input"
    )
    configure.add_argument(
        "--api-key", nargs="?", action=_RejectKeyArgument, help=argparse.SUPPRESS
    )
    configure.add_argument(
        "--agent-id", metavar="ID", help="this agent's id (shown at registration)"
    )
    configure.add_argument(
        "--poll-interval", metavar="SECONDS", type=float, help="seconds between polls (default 30)"
    )
    configure.add_argument(
        "--temp-dir", metavar="DIR", type=Path, help="scratch folder for the scan list"
    )
    for direction, what in (("upload", "backups"), ("download", "restores")):
        configure.add_argument(
            f"--limit-{direction}",
            metavar="MBIT",
            type=_limit,
            help=f"limit {what} to MBIT Mbit/s in all (0 removes the limit)",
        )
    commands_group = configure.add_mutually_exclusive_group()
    commands_group.add_argument(
        "--allow-server-commands",
        dest="allow_server_commands",
        action="store_const",
        const=True,
        help="run the pre/post commands that configs set on the server (off by default: it "
        "lets whoever holds the account run commands on this machine)",
    )
    commands_group.add_argument(
        "--no-allow-server-commands",
        dest="allow_server_commands",
        action="store_const",
        const=False,
        help="stop running commands set on the server",
    )
    configure.add_argument(
        "--parallel-backups",
        metavar="N",
        type=_parallel,
        help=f"back up to N different configs at the same time (1-{MAX_PARALLEL_BACKUPS}, "
        "default 1)",
    )
    configure.add_argument(
        "--no-verify", action="store_true", help="save without checking the key with a heartbeat"
    )


def add_pair(commands: Commands) -> None:
    """Add ``pair``."""
    pair = add_command(
        commands,
        "pair",
        "desktop_agent.cli.pair:cmd_pair",
        help="connect this machine with a pairing code from the web console",
        description=(
            "Trade a one-time pairing code (Agents → Add a machine in the web console, valid 15 "
            "minutes) for this machine's API key, stored in the OS keychain and never shown."
        ),
    )
    pair.add_argument("code", metavar="CODE", help="the code, e.g. K7Q-4MX-P2D")
    pair.add_argument(
        "--server", metavar="URL", help="the BackApp server (default: the configured one)"
    )


def add_run(commands: Commands) -> None:
    """Add ``run`` and ``daemon``."""
    run = add_command(
        commands,
        "run",
        "desktop_agent.cli.run:cmd_run",
        help="back up the assigned configs once",
        description="Heartbeat, fetch the assigned configs, back each one up, heartbeat.",
    )
    run.add_argument(
        "--config",
        metavar="ID",
        action="append",
        dest="config_ids",
        help="only this config (repeatable)",
    )
    run.add_argument("--json", action="store_true", help="print progress events as JSON lines")

    daemon = add_command(
        commands,
        "daemon",
        "desktop_agent.cli.run:cmd_daemon",
        help="run in the background: scheduled backups, Back Up Now from the web",
        description="Stay running until SIGTERM or Ctrl-C: heartbeat every pollInterval, keep a "
        "WebSocket open to the server for Back Up Now, run each config when its schedule is due "
        "(in this machine's time zone), retry failed scheduled backups. One backup at a time.",
    )
    daemon.add_argument("--json", action="store_true", help="print progress events as JSON lines")
    daemon.add_argument(
        "--no-socket",
        action="store_true",
        help="do not open the WebSocket (Back Up Now then arrives with the next heartbeat)",
    )
    daemon.add_argument(
        "--tick",
        metavar="SECONDS",
        type=float,
        default=15.0,
        help="seconds between schedule checks (default 15)",
    )


def add_status(commands: Commands) -> None:
    """Add ``status``."""
    status = add_command(
        commands,
        "status",
        "desktop_agent.cli.status:cmd_status",
        help="show the connection, the assigned configs and their last results",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")


def add_restore(commands: Commands) -> None:
    """Add ``backups`` and ``restore``."""
    backups = add_command(
        commands,
        "backups",
        "desktop_agent.cli.restore:cmd_backups",
        help="list the backups this agent can restore",
        description="The completed backups of the configs assigned to this agent, newest first; "
        "with --agent, those of an agent this one replaces (the owner marks that in the web "
        "console: This machine replaces…).",
    )
    add_listing_options(backups, "backups")

    restore = add_command(
        commands,
        "restore",
        "desktop_agent.cli.restore:cmd_restore",
        help="download, verify and extract a backup",
        description="Download a backup, verify its size and SHA-256, and extract it into a new "
        "folder (default: ./backapp-restore-<config>-<date>), never over the originals unless "
        "--in-place is given.",
    )
    restore.add_argument("backup_id", metavar="BACKUP_ID", help="the backup (see `backups`)")
    where = restore.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="DIR", type=Path, help="restore into this folder")
    where.add_argument(
        "--in-place",
        action="store_true",
        help="restore to the original paths (an existing file that differs is kept, the restored "
        "copy goes beside it as `name (restored DATE TIME).ext`)",
    )
    where.add_argument(
        "--list", action="store_true", help="list the archive's members, extract nothing"
    )
    restore.add_argument(
        "--path",
        metavar="PATTERN",
        action="append",
        dest="patterns",
        default=[],
        help="only members matching PATTERN (repeatable; `*.pdf`, `/home/me/Documents`, `a/**/b`)",
    )
    restore.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files that differ (default: keep both)",
    )
    restore.add_argument(
        "--recovery-code-stdin",
        action="store_true",
        help="read the account's recovery code from standard input (one line): a snapshot or "
        "an encrypted archive restores even when this machine lost its repository key (the key "
        "is put back), or on the new machine that inherits the one that made it",
    )
    restore.add_argument(
        "--organisation-code-stdin",
        action="store_true",
        help="administrators: read the organisation's recovery code from standard input and "
        "restore a snapshot or an encrypted archive of any machine of the server (the owner "
        "sees it in that machine's log)",
    )
    restore.add_argument("--json", action="store_true", help="print progress events as JSON lines")


def add_snapshots(commands: Commands) -> None:
    """Add ``snapshots`` and ``ls``."""
    snapshots = add_command(
        commands,
        "snapshots",
        "desktop_agent.cli.snapshots:cmd_snapshots",
        help="list this machine's snapshots (incremental backups)",
        description="The completed snapshots of the configs assigned to this agent, newest first: "
        "when, how many files, their total size, and the new data each uploaded.",
    )
    add_listing_options(snapshots, "snapshots")

    ls = add_command(
        commands,
        "ls",
        "desktop_agent.cli.snapshots:cmd_ls",
        help="list the files of a snapshot",
        description="Every file, folder and link of a snapshot (below PATH, e.g. "
        "home/me/Documents), as `restore --path` names them. Reads only the snapshot's folder "
        "listings, never file contents.",
    )
    ls.add_argument("backup_id", metavar="BACKUP_ID", help="the snapshot (see `snapshots`)")
    ls.add_argument("path", metavar="PATH", nargs="?", default="", help="only below this path")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument(
        "--organisation-code-stdin",
        action="store_true",
        help="administrators: read the organisation's recovery code from standard input and list "
        "a snapshot of any machine of the server (the owner sees it in that machine's log)",
    )


def add_checks(commands: Commands) -> None:
    """Add ``check`` and ``drill``."""
    check = add_command(
        commands,
        "check",
        "desktop_agent.cli.checks:cmd_check",
        help="verify the newest snapshots (and read back a share of their data)",
        description="For the newest snapshot of each configuration (or only --config's): every "
        "folder listing opens and matches its id, every chunk is in the repository's index, "
        "every pack it needs is stored and its header agrees with the index. With --read-data, "
        "that share of the packs (a random sample, at least one) is downloaded, and every blob "
        "in them decrypted and checked against its id. The result goes to the server (the "
        "config's page; an alert on problems). Exit status 1 when anything is wrong.",
    )
    check.add_argument("--config", metavar="ID", dest="config_id", help="only this config")
    check.add_argument(
        "--read-data",
        metavar="PERCENT",
        type=percent,
        default=0.0,
        help="download and verify this share of the packs (0-100; default 0: structure only)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")

    drill = add_command(
        commands,
        "drill",
        "desktop_agent.cli.checks:cmd_drill",
        help="run a restore drill now: restore a sample of files and verify them",
        description="Restores a random sample of files from the configuration's newest snapshot "
        "into a temporary folder, through the same path as `restore`, checks each against the "
        "snapshot's chunk ids, deletes them, and reports the time to the first byte, the rate "
        "and the time a full restore would take. The daemon runs drills on its own for configs "
        'with options.drill ({"every": "weekly", "sample": 20}). Exit status 1 on a failure.',
    )
    drill.add_argument(
        "--config", metavar="ID", dest="config_id", required=True, help="the config to drill"
    )
    drill.add_argument(
        "--sample",
        metavar="N",
        type=sample_size,
        default=None,
        help="files to restore (default: the config's options.drill.sample, else 20)",
    )
    drill.add_argument("--json", action="store_true", help="print one JSON object")


def add_compact(commands: Commands) -> None:
    """Add ``compact``."""
    compact = add_command(
        commands,
        "compact",
        "desktop_agent.cli.compact:cmd_compact",
        help="rewrite partly-used packs so that the server can free their space",
        description="Reads every live snapshot of this machine's repository, finds the packs "
        "with at least --threshold percent of their bytes unused (after retention removed "
        "snapshots), copies their live data into new packs, uploads them and tells the server, "
        "which deletes the old packs after its grace window (BACKAPP_COMPACT_GRACE_SECONDS). "
        "Stopped at any point, nothing changes: every snapshot keeps its packs. The daemon "
        "does this by itself when the server asks. Exit status 1 on a failure.",
    )
    compact.add_argument(
        "--config",
        metavar="ID",
        dest="config_id",
        help="only rewrite packs that this config's snapshots use",
    )
    compact.add_argument(
        "--threshold",
        metavar="PERCENT",
        type=percent,
        default=None,
        help="rewrite packs with at least this share unused (default: compactThreshold, 20)",
    )
    compact.add_argument("--json", action="store_true", help="print one JSON object")


def add_recovery(commands: Commands) -> None:
    """Add ``recovery`` and its sub-commands."""
    recovery = add_command(
        commands,
        "recovery",
        "desktop_agent.cli.recovery:cmd_recovery",
        help="the account's recovery code (set up, rotate, status)",
        description="The recovery code gets your backups back when a machine's keychain is lost "
        f"or on a new machine. {LOSS_WARNING}",
    )
    subs = recovery.add_subparsers(dest="recovery_command", metavar="SUBCOMMAND")
    init = add_command(
        subs,
        "init",
        "desktop_agent.cli.recovery:cmd_init",
        help="set up recovery and print the new code once",
        description="Make the account's recovery code, print it once, and store this machine's "
        "repository key on the server wrapped for it (the server cannot open it).",
    )
    init.add_argument("--json", action="store_true", help="print one JSON object")
    rotate = add_command(
        subs,
        "rotate",
        "desktop_agent.cli.recovery:cmd_rotate",
        help="replace the recovery code (the old one stops working)",
        description="Read the current code from standard input, unwrap every repository key of "
        "the account with it, make a new code and wrap them all for it at once.",
    )
    rotate.add_argument(
        "--recovery-code-stdin",
        action="store_true",
        required=True,
        help="read the current recovery code from standard input (one line)",
    )
    rotate.add_argument("--json", action="store_true", help="print one JSON object")
    cont = add_command(
        subs,
        "continue",
        "desktop_agent.cli.recovery:cmd_continue",
        help="continue the snapshot repository of the machine this one replaces",
        description="Read the recovery code from standard input, unwrap the repository key of "
        "the machine this one replaces (the owner's mark in the web console), and continue its "
        "repository: this machine's next snapshot adds to it and uploads only what differs. "
        "Run it before this machine's first snapshot.",
    )
    cont.add_argument(
        "--from-agent",
        required=True,
        metavar="ID",
        help="the id of the old machine (its agent page in the web console)",
    )
    cont.add_argument(
        "--recovery-code-stdin",
        action="store_true",
        required=True,
        help="read the account's recovery code from standard input (one line)",
    )
    cont.add_argument("--json", action="store_true", help="print one JSON object")
    status = add_command(
        subs,
        "status",
        "desktop_agent.cli.recovery:cmd_status",
        help="whether recovery is set up (never shows the code)",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    identity = add_command(
        subs,
        "identity",
        "desktop_agent.cli.recovery:cmd_identity",
        help="print the age identity of a recovery code (to open encrypted archives with `age`)",
        description="Read a recovery code from standard input and print the age identity "
        "(AGE-SECRET-KEY-1…) it gives, as an identity file: `age -d -i FILE` opens the "
        "account's encrypted archives with it, without BackApp. The identity is a secret as "
        "strong as the code: keep the file private and delete it after use.",
    )
    identity.add_argument(
        "--recovery-code-stdin",
        action="store_true",
        required=True,
        help="read the recovery code from standard input (one line)",
    )
    identity.add_argument(
        "--organisation",
        action="store_true",
        help="the code is the organisation's (an administrator's), not the account's",
    )
    organisation = add_command(
        subs,
        "organisation-code",
        "desktop_agent.cli.recovery:cmd_organisation_code",
        help="make an organisation recovery code (administrators; needs no server)",
        description="Make a new organisation recovery code on this machine, print it once, and "
        "print its public key (age1…) for an administrator to paste into the web console "
        "(Agents page, Organisation recovery). The server never sees the code.",
    )
    organisation.add_argument("--json", action="store_true", help="print one JSON object")


def add_update(commands: Commands) -> None:
    """Add ``update``."""
    update = add_command(
        commands,
        "update",
        "desktop_agent.cli.update:cmd_update",
        help="install the agent build the server offers now (--check: only tell)",
        description="Asks the server (a heartbeat) which agent build this machine should run. "
        "With --check, says whether an update is available. Without, downloads it next to this "
        "program, checks its size, SHA-256 and the release key's signature, runs it once "
        "(--version), keeps this build as <program>.previous, swaps the new one in and restarts "
        "as it; the new build confirms with its first heartbeat, or the previous build comes "
        "back. Only the single-file build updates itself: a Python package install is updated "
        "by its package manager, the tray app's folder or bundle by its installer. Exit status "
        "0 up to date or updated; 1 refused or failed; 2 this install cannot update itself.",
    )
    update.add_argument(
        "--check", action="store_true", help="only say whether an update is available"
    )
    update.add_argument("--json", action="store_true", help="print one JSON object")
