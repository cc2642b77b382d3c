"""The allocator setting a snapshot makes before its threads allocate their buffers."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_agent.engine._repo import memory

ROOT = Path(__file__).resolve().parents[3]

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)


@glibc
def test_a_large_freed_buffer_goes_back_to_the_system() -> None:
    # In a fresh process: a freed 8 MiB buffer raises glibc's dynamic threshold, so the next
    # 4 MiB buffers come from the heap and stay in the RSS once freed; with the setting they are
    # mapped and unmapped. Measured as the RSS left after freeing them.
    script = """
import ctypes, ctypes.util, resource, sys
from desktop_agent.engine._repo.memory import tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
big = libc.malloc(8 << 20); ctypes.memset(big, 1, 8 << 20); libc.free(big)
before = rss()
blocks = [libc.malloc(4 << 20) for _ in range(8)]
for b in blocks:
    ctypes.memset(b, 1, 4 << 20)
for b in blocks[:-1]:
    libc.free(b)
print((rss() - before) >> 20)
"""

    def kept(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", script, mode], cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    assert kept("tuned") <= 6  # the one block still held, and a little
    assert kept("plain") >= 20  # the freed blocks stay in the heap without the setting


@glibc
def test_tuning_is_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_done", False)
    calls: list[tuple[int, int]] = []

    class Libc:
        @staticmethod
        def mallopt(param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: Libc())
    assert memory.tune_allocator() and memory.tune_allocator()
    assert calls == [(-3, 256 * 1024)]
    assert ctypes.util.find_library("c")


def test_elsewhere_nothing_is_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.tune_allocator() is False
