"""``backapp-agent`` loads only the parts of the engine the command it runs needs (issue 12: a
one-file restore spent most of its time importing the backup pipeline, the scheduler and the
updater it never used). Here, beside the engine's unit tests, because it names the engine's private
modules (to check that they stay unloaded).

Each check runs in a fresh interpreter: what this test process imported before says nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: What no command but a backup (``run``, ``daemon``) or ``status`` needs: the archive pipeline,
#: the snapshot writer, the scheduler, the updater.
BACKUP_SIDE = (
    "desktop_agent.engine._archive",
    "desktop_agent.engine._engine",
    "desktop_agent.engine._scheduling",
    "desktop_agent.engine._upload",
    "desktop_agent.engine._tar",
    "desktop_agent.engine._scanner",
    "desktop_agent.engine._update",
    "desktop_agent.engine._repo.snapshot",
    "desktop_agent.engine._repo.run",
)
#: What building the parser needs none of: the HTTP stack, the key store, the repository and
#: restore code, the wire types, the package metadata.
NETWORK_AND_REPO = (
    "httpx",
    "keyring",
    "msgspec",
    "importlib.metadata",
    "desktop_agent.engine._transport",
    "desktop_agent.engine._keystore",
    "desktop_agent.engine._repo",
    "desktop_agent.engine._restore",
    "desktop_agent.engine._recovery",
    "desktop_agent.engine.protocol",
)


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (not the ``None`` that keeps
    httpx's command line out: see ``desktop_agent/__init__``)."""
    script = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def matching(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        m for m in modules if m in prefixes or m.startswith(tuple(f"{p}." for p in prefixes))
    )


def test_building_the_parser_loads_no_engine_internals_nor_network_code() -> None:
    loaded = loaded_after("import desktop_agent.cli as cli\ncli.build_parser()")
    assert matching(loaded, BACKUP_SIDE + NETWORK_AND_REPO) == []


def test_the_help_runs_without_them_too() -> None:
    code = (
        "import contextlib, io, desktop_agent.cli as cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['restore', '--help'], ['ls', '--help']):\n"
        "        try:\n"
        "            cli.main(argv)\n"
        "        except SystemExit:\n"
        "            pass"
    )
    assert matching(loaded_after(code), BACKUP_SIDE + NETWORK_AND_REPO) == []


@pytest.mark.parametrize("module", ["restore", "snapshots"])
def test_restore_and_listing_commands_load_no_backup_code(module: str) -> None:
    loaded = loaded_after(f"import desktop_agent.cli, desktop_agent.cli.{module}")
    assert f"desktop_agent.cli.{module}" in loaded and "httpx" in loaded  # it did load its own
    assert matching(loaded, BACKUP_SIDE) == []


def test_connecting_for_a_restore_loads_no_backup_code() -> None:
    """What ``restore`` and ``ls`` do before their first request: the clients from the settings
    (``connect`` once lived beside the backup engine, which a restore then imported at run time)."""
    code = (
        "from desktop_agent.engine import AgentSettings, OrganisationSnapshots, Snapshots\n"
        "settings = AgentSettings(server_url='http://127.0.0.1:9')\n"
        "Snapshots.from_settings(settings, 'key').close()\n"
        "OrganisationSnapshots.connect(settings, 'key', 'code').close()"
    )
    assert matching(loaded_after(code), BACKUP_SIDE) == []


def test_status_reads_the_schedule_store_without_the_scheduler(tmp_path: Path) -> None:
    """``status`` shows each config's schedule and last scheduled run (``ScheduleStore``): that
    once imported the whole scheduling package, the daemon and the backup pipeline with it."""
    code = (
        "import contextlib, io, os\n"
        f"os.environ['BACKAPP_AGENT_CONFIG_DIR'] = {str(tmp_path)!r}\n"
        "import desktop_agent.cli as cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        cli.main(['status'])\n"
        "    except SystemExit:\n"
        "        pass"
    )
    loaded = loaded_after(code)
    assert "desktop_agent.cli.status" in loaded and "desktop_agent.engine._state" in loaded
    backup_side = tuple(m for m in BACKUP_SIDE if m != "desktop_agent.engine._scheduling")
    assert matching(loaded, backup_side) == []
    assert matching(loaded, ("desktop_agent.engine._scheduling",)) in (
        [],
        ["desktop_agent.engine._scheduling", "desktop_agent.engine._scheduling.store"],
    )
