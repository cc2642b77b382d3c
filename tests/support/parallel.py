"""The suite runs on several pytest-xdist workers by default (registered in ``tests/conftest.py``).

Most of the suite's time is spent waiting: on ``backapp serve`` processes, agents, PostgreSQL,
SeaweedFS, Chromium and PyInstaller builds. So ``python -m pytest`` starts :data:`WORKERS_PER_CPU`
workers per CPU (4 on a 2-core CI machine) unless told otherwise:

* ``-n N`` picks the number, ``-n 0`` or ``-p no:xdist`` runs everything in this process;
* naming single tests (``tests/x/test_y.py::test_z``) or ``--pdb``/``--trace`` runs them in this
  process too, where a debugger and ``print`` work and no worker has to start.

Tests are spread by file (``--dist loadfile``, the files with most tests first): a module's tests run
on one worker, one after the other, so a module-scoped fixture (Chromium) starts once and a frozen
build a test module makes (``BACKAPP_TEST_BUILD_FROZEN=1``) is made once for it. (``--dist loadgroup``
and ``xdist_group`` marks would say the same per group, but with pytest 9.2 and pytest-xdist 3.8 the
marks are silently ignored: pytest-xdist issue 1386.) Each worker is a process of its own with its
own session fixtures (PostgreSQL cluster, S3 servers, Redis), temporary folders and ports
(``tests/support/ports.py``).
"""

from __future__ import annotations

import os

import pytest

from .ports import worker_index

__all__ = ["WORKERS_PER_CPU", "default_workers", "xvfb_run"]

#: More workers than cores, as the tests mostly wait on servers and subprocesses; CI has 2 cores.
WORKERS_PER_CPU = 2


def default_workers() -> int:
    """The number of workers ``python -m pytest`` starts when ``-n`` is not given."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    return max(2, WORKERS_PER_CPU * cpus)


def _only_single_tests(config: pytest.Config) -> bool:
    args = config.args if config.args_source == pytest.Config.ArgsSource.ARGS else []
    return bool(args) and all("::" in arg for arg in args)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Before xdist reads them: default ``-n`` and ``--dist loadfile``."""
    if not config.pluginmanager.hasplugin("xdist") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if config.option.numprocesses is None:
        debugging = config.getoption("usepdb") or config.getoption("trace")
        if debugging or _only_single_tests(config) or config.getoption("collectonly"):
            return
        config.option.numprocesses = default_workers()
    if config.option.numprocesses != 0 and config.option.dist == "no":
        config.option.dist = "loadfile"


def xvfb_run(screen: str) -> list[str]:
    """The ``xvfb-run`` command prefix for an X server of ``screen`` (``"1280x1024x24"``).

    ``xvfb-run -a`` looks for a free display from 99 on, and two of them starting at once (two
    workers) can both pick the same one: then one X server fails to start. Each worker starts its
    search at a display number of its own."""
    return [
        "xvfb-run",
        "--auto-servernum",
        f"--server-num={100 + 10 * worker_index()}",
        "-s",
        f"-screen 0 {screen}",
    ]
