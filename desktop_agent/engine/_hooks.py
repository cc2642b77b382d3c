"""A config's ``preCommand`` / ``postCommand``: shell commands around a backup (an LVM, Btrfs or
ZFS snapshot made and mounted before, removed after; a database dump; see docs/agent.md).

A command set on the server runs on this machine: remote execution for whoever holds the owner's
account. So it runs only where the machine's own setting allows it (``allowServerCommands``, off by
default); otherwise the backup fails before anything runs, saying how to allow it.

``preCommand`` runs before the scan; if it fails (non-zero exit, timeout), the backup stops and its
reason carries the command's output. ``postCommand`` runs after every backup whose pre-command
succeeded (or that had none), whatever the backup's outcome (``BACKAPP_BACKUP_STATUS`` says it); a
failing post-command is logged as a warning and does not change the backup's outcome (the data is
stored). Both run under ``commandTimeoutSeconds`` (default 600): a command still running then is
killed with its whole process group, and counts as failed. Output (stdout and stderr together) goes
to the agent's log on the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._cancel import CancelToken
from ._errors import AgentError, ConfigurationError
from .protocol import ConfigInfo

__all__ = [
    "CommandFailed",
    "CommandResult",
    "ConfigCommands",
    "not_allowed_text",
    "run_command",
]

OUTPUT_KEPT = 16 * 1024
"""Characters of a command's output kept (its end: where the error usually is)."""
OUTPUT_IN_REASON = 1000
"""Characters of a failed pre-command's output in the backup's reason."""
SendLog = Callable[[str, str, dict[str, object]], None]


class CommandFailed(AgentError):
    """The pre-command failed: the backup stops with this reason."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    code: int | None
    """The exit status; ``None`` when it was killed (timeout, cancel)."""
    output: str
    seconds: float
    timed_out: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out and not self.cancelled

    def outcome(self, timeout: float) -> str:
        if self.timed_out:
            return f"did not finish within {timeout:g} s and was stopped"
        if self.cancelled:
            return "was stopped (the backup was cancelled)"
        if self.code == 0:
            return f"finished in {self.seconds:.1f} s"
        return f"failed with exit status {self.code}"


def run_command(
    command: str,
    *,
    timeout: float,
    env: Mapping[str, str],
    cancel: CancelToken | None = None,
) -> CommandResult:
    """Run ``command`` in the shell (``sh -c``; ``cmd /c`` on Windows) with ``env`` added to the
    environment, no input, output captured; killed with its process group after ``timeout``
    seconds or on ``cancel``."""
    t0 = time.monotonic()
    posix = os.name == "posix"
    proc = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=posix,  # its own group, so a timeout kills what it started too
    )
    chunks: list[bytes] = []
    timed_out = cancelled = False
    while True:
        left = t0 + timeout - time.monotonic()
        try:
            out, _ = proc.communicate(timeout=max(0.01, min(0.5, left)))
            chunks.append(out or b"")
            break
        except subprocess.TimeoutExpired:
            timed_out = time.monotonic() >= t0 + timeout
            cancelled = cancel is not None and cancel.is_set()
            if timed_out or cancelled:
                _kill(proc, posix)
                out, _ = proc.communicate()
                chunks.append(out or b"")
                break
    output = b"".join(chunks).decode("utf-8", "replace")[-OUTPUT_KEPT:]
    return CommandResult(
        code=None if timed_out or cancelled else proc.returncode,
        output=output,
        seconds=time.monotonic() - t0,
        timed_out=timed_out,
        cancelled=cancelled and not timed_out,
    )


def _kill(proc: subprocess.Popen[bytes], posix: bool) -> None:
    try:
        if posix:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def not_allowed_text(config: ConfigInfo) -> str:
    """Why a config with commands does not run here, and how to allow it."""
    which = " and ".join(
        name
        for name, value in (
            ("preCommand", config.options.pre_command),
            ("postCommand", config.options.post_command),
        )
        if value
    )
    return (
        f"this configuration sets {which} (a command the server asks this machine to run), and "
        "this agent does not run commands set on the server. To allow it, run `backapp-agent "
        "configure --allow-server-commands` on this machine (or set allowServerCommands: true in "
        "its config.json, or BACKAPP_AGENT_ALLOW_SERVER_COMMANDS=1), then back up again"
    )


class ConfigCommands:
    """A config's pre- and post-command for one backup: ``before``, then ``after``."""

    def __init__(
        self,
        config: ConfigInfo,
        *,
        allowed: bool,
        send_log: SendLog,
        run: Callable[..., CommandResult] = run_command,
    ) -> None:
        self.config = config
        self.allowed = allowed
        self._send_log = send_log
        self._run = run
        self._pre_ok = False
        self.timeout = float(config.options.command_timeout_seconds)

    @property
    def active(self) -> bool:
        return bool(self.config.options.pre_command or self.config.options.post_command)

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            "BACKAPP_CONFIG_ID": self.config.id,
            "BACKAPP_CONFIG_NAME": self.config.name,
            "BACKAPP_SOURCES": os.pathsep.join(s.path for s in self.config.sources),
            **extra,
        }

    def before(self, cancel: CancelToken | None = None) -> None:
        """Check the commands may run here, run the pre-command; ``CommandFailed`` (its output in
        the reason) or ``ConfigurationError`` (not allowed) stop the backup."""
        if self.config.options.snapshot:
            from ._volume import refuse_snapshot

            refuse_snapshot(self.config.options.snapshot)
        if self.active and not self.allowed:
            raise ConfigurationError(not_allowed_text(self.config))
        command = self.config.options.pre_command
        if command:
            try:
                result = self._run(command, timeout=self.timeout, env=self._env(), cancel=cancel)
            except OSError as exc:
                raise CommandFailed(f"the pre-command could not be started: {exc}") from exc
            self._report("preCommand", command, result)
            if not result.ok:
                tail = result.output.strip()[-OUTPUT_IN_REASON:]
                raise CommandFailed(
                    f"the pre-command {result.outcome(self.timeout)}"
                    + (f"; its output: {tail}" if tail else " (it printed nothing)")
                )
        self._pre_ok = True

    def after(self, status: str) -> None:
        """Run the post-command (if the pre-command succeeded); never raises."""
        command = self.config.options.post_command
        if not command or not self._pre_ok:
            return
        try:
            result = self._run(
                command, timeout=self.timeout, env=self._env(BACKAPP_BACKUP_STATUS=status)
            )
        except OSError as exc:
            result = CommandResult(code=None, output=str(exc), seconds=0.0)
        self._report("postCommand", command, result)

    def _report(self, which: str, command: str, result: CommandResult) -> None:
        name = self.config.name or self.config.id
        self._send_log(
            "info" if result.ok else ("error" if which == "preCommand" else "warning"),
            f"The {which} of '{name}' {result.outcome(self.timeout)}",
            {
                "configId": self.config.id,
                "command": command[:1000],
                "exitCode": result.code,
                "seconds": round(result.seconds, 1),
                "output": result.output[-4000:],
            },
        )
