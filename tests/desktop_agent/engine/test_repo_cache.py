"""The snapshot repository's local cache under threads: a ``close`` while other threads are inside
statements must neither crash the process nor fail their calls (it once ended in a segmentation
fault: SQLite connections closed under a running statement)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from desktop_agent.engine._repo.cache import Cache
from desktop_agent.engine._repo.pack import PackEntry


def test_close_while_other_threads_read_and_write(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache.db")
    ids = [os.urandom(32) for _ in range(400)]
    cache.add_pack(
        "p" * 64, 1, 1000, [PackEntry(0, i, n * 10, 10, 10, False) for n, i in enumerate(ids)]
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                assert len(cache.locate(ids)) == len(ids)
                cache.put_tree(os.urandom(32), b"tree" * 100)
        except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(200):
        cache.close()
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(cache.locate(ids)) == len(ids)  # usable again after close
    cache.close()
