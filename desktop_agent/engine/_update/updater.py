"""One agent build replacing itself with a newer one the server offers, safely.

The order is what keeps a machine with a working agent at every step:

1. the offer's fields are checked against the release key's signature (nothing is downloaded for
   an offer the key did not sign: a server or bucket that was taken over cannot push a build);
2. the build is downloaded next to the executable (same file system: the swap is a rename),
   streamed and capped at the size the release names, then its size and SHA-256 are checked;
3. it is run once (``NEW --version`` must print the target version and exit 0 within a minute);
4. the running build is kept as ``<exe>.previous`` and the new one renamed over ``<exe>``;
5. a pending marker (``store.Pending``) gives the new build a deadline to prove itself: its first
   successful heartbeat clears the marker; a start after the deadline that still finds it (of
   either build) puts ``<exe>.previous`` back and refuses that version;
6. the caller restarts by exec, with the same arguments (``Updater.restart``).

Anything wrong in 1-3 refuses the version with one log line (``update 1.2.4 refused: …``), deletes
the download and does not try that version again for a day (``refuse_for``).

Only a single-file frozen build (PyInstaller ``onefile``: the headless agent) replaces itself. A
Python package install is updated by its package manager, and a folder or app bundle (the tray
app's build) by its installer: both only say so, once.

Windows (not tested here): a running ``.exe`` cannot be overwritten but can be renamed, so the swap
there renames the old build to ``.previous`` first and the new one in second (two renames, not one
atomic replace), a rollback moves the refused build aside to ``.refused`` the same way, and
``os.execv`` starts a new process instead of replacing this one (a service wrapper sees its process
exit).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NoReturn

import httpx
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from packaging.version import InvalidVersion, Version

from desktop_agent import __version__

from .. import releases
from .._transport.tls import tls_context
from ..protocol import UpdateOffer
from .store import Pending, UpdateStore

__all__ = [
    "CONFIRM_WITHIN",
    "REFUSE_FOR",
    "TRIAL_TIMEOUT",
    "InstallKind",
    "UpdateResult",
    "Updater",
    "child_env",
    "install_kind",
    "offer_from",
]

log = logging.getLogger("desktop_agent.engine.update")

InstallKind = Literal["file", "folder", "package"]
Status = Literal["current", "available", "updated", "refused", "skipped", "unsupported", "failed"]

CHUNK = 1 << 20
TRIAL_TIMEOUT = 60.0
CONFIRM_WITHIN = 300.0
REFUSE_FOR = 86_400.0
RETRY_AFTER_FAILURE = 3600.0

_UNSUPPORTED = {
    "package": "this agent runs from a Python package: its package manager updates it "
    "(pip, pipx or the system's packages)",
    "folder": "this install is a folder or an app bundle (the tray app's build): its installer "
    "updates it",
}


def install_kind() -> InstallKind:
    """How this process was installed: one frozen file, a frozen folder/bundle, or a package."""
    if not getattr(sys, "frozen", False):
        return "package"
    # A onefile build unpacks itself into a temporary _MEIxxxxxx folder at each start; a folder
    # build (and a macOS bundle) runs from files beside its executable.
    bundle = Path(getattr(sys, "_MEIPASS", "") or Path(sys.executable).parent)
    return "file" if bundle.name.startswith("_MEI") else "folder"


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for starting another frozen build from this one: without what this build's
    bootloader set for itself (else the new build would run this one's unpacked files)."""
    env = dict(os.environ if environ is None else environ)
    for name in list(env):
        if name.startswith(("_PYI_", "_MEIPASS")):
            del env[name]
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    return env


def offer_from(raw: Any) -> UpdateOffer | None:
    """The heartbeat's ``update`` as an offer; ``None`` when absent or malformed (logged)."""
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, UpdateOffer)
    except msgspec.ValidationError as exc:
        log.warning("the server's update offer is malformed (ignored): %s", exc)
        return None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one check or update did: ``status`` and a sentence for people."""

    status: Status
    current: str
    version: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "current": self.current,
            "version": self.version,
            "message": self.message,
        }


class _Refused(Exception):
    """The offered build is not the release it claims to be: refuse its version."""


class _Failed(Exception):
    """The update could not be done now (network, disk): try again later, nothing is refused."""


@dataclass
class Updater:
    """Checks, installs and rolls back agent builds (see the module doc). The defaults are this
    process's; tests pass an executable (a tiny script), ``kind="file"`` and a transport."""

    state_dir: Path
    executable: Path | None = None
    current: str = __version__
    platform: str = sys.platform
    kind: InstallKind | None = None
    public_key: Callable[[], Ed25519PublicKey] = releases.release_public_key
    transport: httpx.BaseTransport | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    trial_timeout: float = TRIAL_TIMEOUT
    confirm_within: float = CONFIRM_WITHIN
    refuse_for: float = REFUSE_FOR
    execve: Callable[[str, list[str], dict[str, str]], Any] | None = None
    """How ``restart`` replaces this process (``os.execve``; tests record the call instead)."""
    store: UpdateStore = field(init=False)
    _retry_at: dict[str, float] = field(init=False, default_factory=dict)
    _said_unsupported: bool = field(init=False, default=False)
    _pending: Pending | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.store = UpdateStore(self.state_dir)
        if self.kind is None:
            self.kind = install_kind()
        if self.executable is None:
            self.executable = Path(sys.executable)
        self._pending = self.store.pending()

    @property
    def exe(self) -> Path:
        assert self.executable is not None
        return self.executable

    @property
    def previous(self) -> Path:
        """Where the build that ran before the last update is kept."""
        return self.exe.with_name(self.exe.name + ".previous")

    def unsupported(self) -> str | None:
        """Why this install cannot replace itself (``None``: it can)."""
        reason = _UNSUPPORTED.get(self.kind or "package")
        if reason is None and not os.access(self.exe.parent, os.W_OK):
            # e.g. /usr/local/bin under a service user, or a read-only file system (systemd's
            # ProtectSystem=strict): say so once rather than fail every hour.
            reason = (
                f"this agent cannot write in {self.exe.parent}, the folder of its executable: "
                "run backapp-agent update as a user who can, or install it in a folder it may write"
            )
        return reason

    # -- deciding --------------------------------------------------------------------------------

    def plan(self, offer: UpdateOffer | None, *, manual: bool = False) -> UpdateResult:
        """What ``apply`` would do with ``offer`` (nothing is downloaded): ``current``,
        ``available``, ``skipped`` (refused lately, or failed within the hour) or ``unsupported``."""
        if offer is None or offer.version == self.current:
            return UpdateResult("current", self.current, message=f"up to date ({self.current})")
        reason = self.unsupported()
        if reason is not None:
            return UpdateResult(
                "unsupported",
                self.current,
                offer.version,
                f"{offer.version} is available; {reason}",
            )
        if not manual:
            refused = self.store.refused(offer.version, self.now())
            if refused is not None:
                return UpdateResult(
                    "skipped",
                    self.current,
                    offer.version,
                    f"{offer.version} was refused: {refused}",
                )
            if time.monotonic() < self._retry_at.get(offer.version, 0.0):
                return UpdateResult(
                    "skipped", self.current, offer.version, f"{offer.version} failed lately"
                )
        return UpdateResult(
            "available",
            self.current,
            offer.version,
            f"{offer.version} is available (this is {self.current})",
        )

    # -- updating --------------------------------------------------------------------------------

    def apply(self, offer: UpdateOffer | None, *, manual: bool = False) -> UpdateResult:
        """Download, check, try and swap in ``offer``'s build. ``updated``: the new build is in
        place and the caller must ``restart``; ``manual`` ignores earlier refusals."""
        planned = self.plan(offer, manual=manual)
        if planned.status == "unsupported" and not self._said_unsupported:
            self._said_unsupported = True
            log.info("update %s not installed: %s", planned.version, self.unsupported())
        if planned.status != "available" or offer is None:
            return planned
        version = offer.version
        try:
            self._check_offer(offer)
            download = self._download(offer)
            try:
                self._trial(download, version)
                self._swap(download)
            finally:
                download.unlink(missing_ok=True)
        except _Refused as exc:
            self.refuse(version, str(exc))
            return UpdateResult(
                "refused", self.current, version, f"update {version} refused: {exc}"
            )
        except _Failed as exc:
            self._retry_at[version] = time.monotonic() + RETRY_AFTER_FAILURE
            log.warning("update %s failed, trying again later: %s", version, exc)
            return UpdateResult("failed", self.current, version, f"update {version} failed: {exc}")
        deadline = self.now() + timedelta(seconds=self.confirm_within)
        self._pending = Pending(self.current, version, deadline, str(self.exe))
        self.store.set_pending(self._pending)
        log.info(
            "updated %s to %s (the previous build is kept as %s); restarting",
            self.current,
            version,
            self.previous.name,
        )
        return UpdateResult(
            "updated", self.current, version, f"updated {self.current} to {version}"
        )

    def refuse(self, version: str, reason: str) -> None:
        """Log the one line and do not try ``version`` again for ``refuse_for`` seconds."""
        log.error("update %s refused: %s", version, reason)
        try:
            self.store.refuse(version, reason, self.now() + timedelta(seconds=self.refuse_for))
        except OSError as exc:
            log.warning("cannot remember the refusal of %s: %s", version, exc)

    def _check_offer(self, offer: UpdateOffer) -> None:
        try:
            Version(offer.version)
        except InvalidVersion as exc:
            raise _Refused(f"{offer.version!r} is not a version") from exc
        try:
            releases.verify_release(
                self.public_key(),
                self.platform,
                offer.version,
                offer.sha256,
                offer.size,
                offer.signature,
            )
        except releases.BadRelease as exc:
            raise _Refused(str(exc)) from exc

    def _download(self, offer: UpdateOffer) -> Path:
        """The build, in a temporary file beside the executable, checked against the offer."""
        try:
            fd, name = tempfile.mkstemp(
                dir=self.exe.parent, prefix=f".{self.exe.name}.", suffix=".download"
            )
        except OSError as exc:
            raise _Failed(f"cannot write in {self.exe.parent}: {exc.strerror or exc}") from exc
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
                httpx.Client(
                    transport=self.transport,
                    timeout=httpx.Timeout(60.0, connect=10.0),
                    verify=tls_context(),
                ) as http,
                http.stream("GET", offer.url) as response,
            ):
                if response.status_code != 200:
                    raise _Failed(f"the download answered HTTP {response.status_code}")
                for chunk in response.iter_bytes(CHUNK):
                    size += len(chunk)
                    if size > offer.size:  # never more than the release says, whatever is sent
                        raise _Refused(f"the download is larger than its {offer.size} bytes")
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size != offer.size:
                raise _Refused(f"the download has {size} bytes, its release {offer.size}")
            if digest.hexdigest() != offer.sha256:
                raise _Refused("the download does not match its SHA-256")
            os.chmod(path, 0o755)
        except httpx.HTTPError as exc:
            path.unlink(missing_ok=True)
            raise _Failed(f"the download failed: {exc}") from exc
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise _Failed(f"cannot write the download: {exc}") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _trial(self, path: Path, version: str) -> None:
        """Run the new build once: it must start, and be the version it is said to be."""
        try:
            done = subprocess.run(
                [str(path), "--version"],
                capture_output=True,
                text=True,
                timeout=self.trial_timeout,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _Refused(
                f"the new build did not answer --version within {self.trial_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise _Refused(f"the new build does not start: {exc.strerror or exc}") from exc
        said = done.stdout.strip()
        if done.returncode != 0:
            raise _Refused(f"the new build's --version exited with status {done.returncode}")
        if said.split()[-1:] != [version]:
            raise _Refused(f"the new build says it is {said[:80]!r}, not {version}")

    def _swap(self, new: Path) -> None:
        """``new`` becomes the executable; the running build stays as ``.previous``."""
        exe, previous = self.exe, self.previous
        try:
            os.chmod(new, stat.S_IMODE(exe.stat().st_mode) | 0o500)
            if os.name == "nt":  # pragma: no cover - see the module doc
                previous.unlink(missing_ok=True)
                os.replace(exe, previous)
                try:
                    os.replace(new, exe)
                except OSError:
                    os.replace(previous, exe)
                    raise
                return
            staged = previous.with_name(previous.name + ".tmp")
            staged.unlink(missing_ok=True)
            try:
                os.link(exe, staged)  # the same file, no copy; a copy where links are refused
            except OSError:
                shutil.copy2(exe, staged)
            os.replace(staged, previous)
            os.replace(new, exe)  # atomic: the path holds the old build or the new, never neither
        except OSError as exc:
            raise _Failed(f"cannot replace {exe}: {exc.strerror or exc}") from exc

    # -- after the swap --------------------------------------------------------------------------

    def restart(self, argv: Sequence[str] | None = None) -> NoReturn:
        """Become the build at the executable's path, with the same arguments."""
        args = list(sys.argv[1:] if argv is None else argv)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for handler in logging.getLogger().handlers:
            handler.flush()
        execve = self.execve or os.execve
        execve(str(self.exe), [str(self.exe), *args], child_env())
        raise SystemExit(0)  # only reached with a test's execve

    @property
    def pending(self) -> Pending | None:
        """The update waiting for its first heartbeat (as this process knows it)."""
        return self._pending

    def startup(self) -> bool:
        """On start: a marker past its deadline puts the previous build back. ``True``: this
        process is the refused build and must ``restart`` (into the previous one)."""
        pending = self._pending
        if pending is None:
            return False
        if self.now() < pending.deadline:
            if pending.to_version == self.current:
                log.info(
                    "running the update to %s (from %s): waiting for its first heartbeat",
                    pending.to_version,
                    pending.from_version,
                )
            return False
        return self._roll_back(pending, "it did not heartbeat in time after its start")

    def overdue(self) -> bool:
        """While running: ``startup``'s check again, once the deadline has passed (the new build
        runs but cannot heartbeat). ``True``: restart now (into the previous build)."""
        pending = self._pending
        if pending is None or self.now() < pending.deadline:
            return False
        return self._roll_back(pending, "it did not heartbeat in time after its start")

    def confirm(self) -> bool:
        """After a successful heartbeat: the new build proved itself; ``True`` if it was one."""
        pending = self._pending
        if pending is None or pending.to_version != self.current:
            return False
        self._pending = None
        self.store.clear_pending()
        log.info("the update from %s to %s is confirmed", pending.from_version, self.current)
        return True

    def _roll_back(self, pending: Pending, why: str) -> bool:
        exe = Path(pending.executable) if pending.executable else self.exe
        previous = exe.with_name(exe.name + ".previous")
        self._pending = None
        try:
            if os.name == "nt" and previous.exists():  # pragma: no cover - see the module doc
                refused = exe.with_name(exe.name + ".refused")  # a running .exe can only move
                refused.unlink(missing_ok=True)
                os.replace(exe, refused)
            os.replace(previous, exe)
        except FileNotFoundError:
            log.error(
                "update %s failed (%s) and there is no previous build to go back to",
                pending.to_version,
                why,
            )
        except OSError as exc:
            log.error("cannot put the previous build back at %s: %s", exe, exc)
            return False
        else:
            log.error(
                "update %s rolled back to %s: %s", pending.to_version, pending.from_version, why
            )
        self.refuse(pending.to_version, why)
        self.store.clear_pending()
        return self.current == pending.to_version
