"""``backapp-agent``: the headless agent.

    backapp-agent configure --server URL [--api-key-stdin] [--agent-id ID] [--poll-interval S]
                            [--temp-dir DIR] [--no-verify]
    backapp-agent pair CODE [--server URL]
    backapp-agent run [--config ID ...] [--json]
    backapp-agent daemon [--json] [--no-socket] [--tick SECONDS]
    backapp-agent status [--json]
    backapp-agent backups [--config ID] [--agent ID] [--json]
    backapp-agent restore BACKUP_ID [--to DIR | --in-place] [--path PATTERN ...] [--list]
                          [--overwrite] [--json]
    backapp-agent compact [--config ID] [--threshold PERCENT] [--json]
    backapp-agent update [--check] [--json]
    backapp-agent --version

Exit status: 0 all went well; 1 a backup or restore failed (or the run could not start, or a config
was not started because another process or machine is running it); 2 bad usage or configuration;
3 every backup completed but some files could not be read (as restic does), or a restore completed
but skipped members; 130 interrupted.

The package: ``parser`` builds the command line from what each command takes (``arguments``), and
each command names its function in a command module (``configure``, ``pair``, ``run``: run and
daemon, ``status``, ``restore``: backups and restore, ...), imported only when that command runs;
``common`` holds what they share (exit statuses, error messages, logging, the stored key, Ctrl-C)
and ``display`` how engine events are shown. ``main`` maps the engine's errors to exit statuses.
"""

from __future__ import annotations

from collections.abc import Sequence

from desktop_agent.engine import AgentError, ConfigurationError, KeyStoreError, NetworkError
from desktop_agent.engine.console import run_to_exit_status

from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    err,
    setup_logging,
    verbosity,
)
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``backapp-agent`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return run_to_exit_status(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbosity(args))
    try:
        result: int = args.func(args)
        return result
    except (ConfigurationError, KeyStoreError) as exc:
        err(str(exc))
        return EXIT_USAGE
    except NetworkError as exc:
        err(str(exc))
        return EXIT_FAILED
    except AgentError as exc:  # e.g. the server refused the key or does not know the backup
        err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
