"""A failure that went through retries is told once, not once per attempt: one warning per upload
that had to retry (the rest at info, shown with ``-v``), then the failure with how many attempts it
took. Before, a storage outage printed ~25 warnings ahead of the one ``FAILED`` line."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from desktop_agent.engine import (
    ApiClient,
    BackupEngine,
    EngineOptions,
    HttpStorage,
    RetryPolicy,
    UploadOptions,
)
from tests.support.fakes import API_KEY, STORAGE_HOST, FakeBackApp, _s3_error, config
from tests.support.trees import random_tree

KIB = 1024


def engine(
    fake: FakeBackApp, tmp_path: Path, retry_budget: float | None = None, **upload: object
) -> BackupEngine:
    """Retries bounded by ``retry_budget`` seconds, or (``None``) by 6 attempts."""
    plane = ApiClient(
        "https://backapp.test",
        API_KEY,
        transport=fake.transport,
        sleep=lambda s: None,
        retry=RetryPolicy(max_attempts=6, base_delay=0.0),
    )
    options = EngineOptions(
        temp_dir=tmp_path / "agent-tmp",
        upload=UploadOptions(  # type: ignore[arg-type]
            retry=RetryPolicy(max_attempts=6, base_delay=0.0 if retry_budget is None else 0.02),
            retry_budget=retry_budget,
            **upload,
        ),
    )
    return BackupEngine(plane, HttpStorage(transport=fake.transport), options)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("desktop_agent")
    ]


@pytest.mark.parametrize(
    "upload",
    [
        {},  # one PUT
        {"multipart_threshold": 128 * KIB, "part_size": 128 * KIB, "concurrency": 2},  # 4 parts
    ],
    ids=["single", "multipart"],
)
def test_storage_that_never_answers_gives_one_warning_then_the_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, upload: dict[str, int]
) -> None:
    src = random_tree(tmp_path / "src", 500 * KIB)
    fake = FakeBackApp([config("c1", str(src), compression=False)])
    fake.faults = lambda r: _s3_error(503, "SlowDown") if r.url.host == STORAGE_HOST else None
    caplog.set_level(logging.INFO, logger="desktop_agent")

    [result] = engine(fake, tmp_path, **upload).run().results

    assert result.status == "failed"
    assert "after 6 attempts" in (result.error or "")
    [warning] = warnings(caplog)
    assert "trying again" in warning
    retries = [
        r for r in caplog.records if r.levelno == logging.INFO and "trying again" in r.getMessage()
    ]
    assert retries  # every attempt is still in the log, at info (-v)


def test_within_a_time_budget_too_one_warning_then_the_failure_in_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = random_tree(tmp_path / "src", 500 * KIB)
    fake = FakeBackApp([config("c1", str(src), compression=False)])
    fake.faults = lambda r: _s3_error(503, "SlowDown") if r.url.host == STORAGE_HOST else None
    caplog.set_level(logging.INFO, logger="desktop_agent")

    [result] = engine(fake, tmp_path, retry_budget=0.3).run().results

    assert result.status == "failed"
    assert "gave up on upload after" in (result.error or "")
    [warning] = warnings(caplog)
    assert "trying again (for up to 0 s per part" in warning


def test_a_server_that_is_down_gives_one_warning_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBackApp([])
    fake.faults = lambda r: httpx.ConnectError("refused")
    caplog.set_level(logging.INFO, logger="desktop_agent")
    result = engine(fake, tmp_path).run()
    assert result.error is not None and "after 6 attempts" in result.error
    assert len(warnings(caplog)) == 1
