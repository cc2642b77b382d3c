"""Which of the agent's processes are dead, with real processes: a lock file whose process was
killed (``kill -9``) is free and named for a lease take-over; a live process's never is; a run the
process itself has going keeps its own lease; long-dead processes are forgotten. And the runner
sends all that with the lease it asks for; a Back Up Now it could not start is heard again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from desktop_agent.engine import CancelToken, Dispatcher, Job, Outcome, Runner, RunRequest
from desktop_agent.engine._scheduling.instance import FORGET_AFTER, AgentInstance

from .test_scheduler import Clock, LeasingBackApp, config, engine_factory, make_scheduler, plane_for

ROOT = Path(__file__).resolve().parents[3]
REGISTER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from desktop_agent.engine._scheduling.instance import AgentInstance\n"
    "me = AgentInstance.for_process(Path(sys.argv[1]))\n"
    "print(me.id if me.registered else 'unregistered', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(10)


def register(directory: Path, processes: list[subprocess.Popen[str]]) -> tuple[str, Any]:
    """An agent process that registered in ``directory`` and waits."""
    process = subprocess.Popen(
        [sys.executable, "-c", REGISTER, str(directory)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    assert process.stdout is not None
    ident = process.stdout.readline().strip()
    assert ident and ident != "unregistered"
    return ident, process


def test_killed_processes_are_named_live_ones_never(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "instances"
    live, _ = register(directory, processes)
    dead, victim = register(directory, processes)
    older, old_victim = register(directory, processes)
    for process in (victim, old_victim):
        process.kill()  # SIGKILL: no clean-up ran
        process.wait(10)
    stamp = time.time() - 60
    os.utime(directory / f"{older}.lock", (stamp, stamp))

    me = AgentInstance.for_process(directory)
    assert me.registered and me is AgentInstance.for_process(directory)
    assert me.dead_peers() == [dead, older]  # newest first; never the live one, never itself
    assert live not in me.dead_peers()

    # Its own id is named only while no other run of that config is going on in this process
    # (a lease it left behind, e.g. when the server was down as it tried to release it).
    with me.running("c1") as first:
        assert first == [dead, older, me.id]
        with me.running("c1") as second:  # another thread, same config: that one is live
            assert second == [dead, older]
        with me.running("c2") as other:
            assert other[-1] == me.id
    with me.running("c1") as again:
        assert again[-1] == me.id

    # a process dead long ago is forgotten: any lease of its lapsed long since
    ancient = time.time() - FORGET_AFTER - 60
    os.utime(directory / f"{older}.lock", (ancient, ancient))
    assert me.dead_peers() == [dead]
    assert not (directory / f"{older}.lock").exists()
    assert (directory / f"{live}.lock").exists()


def test_an_unwritable_folder_leaves_an_unregistered_instance(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    me = AgentInstance(blocker / "instances")
    assert not me.registered and me.dead_peers() == []
    with me.running("c1") as take_over:
        assert take_over == [me.id]


def test_the_runner_sends_its_instance_and_the_dead_ones_with_the_lease(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "instances"
    dead, victim = register(directory, processes)
    victim.kill()
    victim.wait(10)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    clock = Clock()
    fake = LeasingBackApp([config("c1", str(src))], clock)
    bodies: list[dict[str, Any]] = []
    handle = fake.handle

    def record(request: Any) -> Any:
        if request.url.path == "/api/agent/lease":
            import json

            bodies.append(json.loads(request.content))
        return handle(request)

    fake.handle = record  # type: ignore[method-assign]
    runner = Runner(plane_for(fake), engine_factory(fake, tmp_path), instance_dir=directory)
    outcome = runner.run(Job("c1", trigger="manual"), None, CancelToken())
    assert outcome.status == "completed", outcome
    [body] = bodies
    assert body["instance"] == runner.instance.id
    assert body["takeOver"] == [dead, runner.instance.id]


def test_a_back_up_now_that_could_not_start_is_heard_again(tmp_path: Path) -> None:
    """Its lease was busy: the request is still pending on the server, whose next heartbeat
    lists it again; it must not be ignored as already handled (it would stay pending, and every
    further click refused as "already pending", for an hour)."""
    clock = Clock()
    d = Dispatcher(make_scheduler(clock, tmp_path), monotonic=clock.monotonic)
    request = RunRequest(id="r1", config_id="c1")
    assert d.request(request)
    picked = d.next_job()
    assert picked is not None
    d.finished(Outcome(picked[0], "skipped", reason="config is already running on x until y"))
    assert d.next_job() is None  # not retried on its own: the server says whether it still stands
    assert d.request(request)  # the next heartbeat's list
    picked = d.next_job()
    assert picked is not None and picked[0].run_request_id == "r1"
    d.finished(Outcome(picked[0], "completed"))
    assert not d.request(request)  # a request that ran is taken once
