"""Bandwidth limits: the token bucket on a fake clock (its waits counted, never waited for), and
the storage client's uploads and downloads through it against real HTTP servers on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop_agent.engine import AgentSettings, ConfigurationError, HttpStorage, Throttle
from desktop_agent.engine._settings import load_settings
from desktop_agent.engine._transport.throttle import MBIT, SLICE
from tests.support.faults import PutServer
from tests.support.s3 import S3Endpoint


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def throttle(rate: float, t: FakeTime) -> Throttle:
    return Throttle(rate, clock=t.clock, sleep=t.sleep)


def test_a_transfer_takes_as_long_as_the_limit_says() -> None:
    t = FakeTime()
    limit = throttle(1_000_000, t)  # 1 MB/s; the bucket starts with 0.25 s worth
    for _ in range(160):
        limit.take(SLICE)  # 10 MiB in all
    total = 160 * SLICE
    assert t.slept == pytest.approx((total - 250_000) / 1_000_000, rel=1e-6)


def test_parallel_transfers_share_one_limit() -> None:
    """Two uploads interleaving their slices get the limit together, not each."""
    t = FakeTime()
    limit = throttle(500_000, t)
    for _ in range(100):
        limit.take(SLICE)  # upload A
        limit.take(SLICE)  # upload B
    assert t.slept == pytest.approx((200 * SLICE - 125_000) / 500_000, rel=1e-6)


def test_an_idle_pause_does_not_buy_a_long_burst() -> None:
    t = FakeTime()
    limit = throttle(1_000_000, t)
    t.now += 3600  # an hour without traffic
    for _ in range(100):
        limit.take(SLICE)
    assert t.slept == pytest.approx((100 * SLICE - 250_000) / 1_000_000, rel=1e-6)


def test_a_new_rate_applies_from_the_next_slice() -> None:
    t = FakeTime()
    limit = throttle(1_000_000, t)
    for _ in range(50):
        limit.take(SLICE)
    before = t.slept
    limit.set_rate(250_000)
    for _ in range(50):
        limit.take(SLICE)
    assert t.slept - before == pytest.approx(50 * SLICE / 250_000, rel=0.01)


@pytest.mark.parametrize("rate", [0, -1])
def test_a_limit_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        Throttle(rate)


def test_mbps_are_network_units() -> None:
    limit = Throttle.from_mbps(8)
    assert limit is not None and limit.rate == 1_000_000 and limit.mbps == 8
    assert Throttle.from_mbps(None) is None
    assert MBIT == 125_000


# --- the storage client ------------------------------------------------------------------------


@pytest.fixture
def put_server() -> Iterator[PutServer]:
    server = PutServer()
    yield server
    server.close()


def test_a_limited_upload_arrives_whole_and_waits_as_long_as_the_limit_says(
    put_server: PutServer,
) -> None:
    t = FakeTime()
    body = os.urandom(3 * 1024 * 1024 + 123)
    with HttpStorage(upload_limit=throttle(1_000_000, t)) as storage:
        storage.put(f"http://127.0.0.1:{put_server.port}/obj?sig=x", body, {})
    assert put_server.bodies["/obj?sig=x"] == body
    assert t.slept == pytest.approx((len(body) - 250_000) / 1_000_000, rel=0.01)


def test_without_a_limit_nothing_waits(put_server: PutServer) -> None:
    with HttpStorage() as storage:
        storage.put(f"http://127.0.0.1:{put_server.port}/free", b"x" * 100_000, {})
    assert put_server.bodies["/free"] == b"x" * 100_000


def test_a_limited_download_reads_the_object_and_its_ranges(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    client = s3_server.client()
    body = os.urandom(2 * 1024 * 1024)
    client.put_object(Bucket=s3_bucket, Key="k", Body=body)
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket, "Key": "k"}, ExpiresIn=300
    )
    t = FakeTime()
    with HttpStorage(download_limit=throttle(1_000_000, t)) as storage:
        assert storage.get_object(url) == body
        whole = t.slept
        assert storage.get_object(url, start=10, end=1000) == body[10:1001]
    assert whole == pytest.approx((len(body) - 250_000) / 1_000_000, rel=0.05)


# --- settings ----------------------------------------------------------------------------------


def test_limits_come_from_config_json_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"limitUpload": 10, "limitDownload": 2.5}')
    env = {"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)}
    settings = load_settings(env)
    assert (settings.limit_upload, settings.limit_download) == (10, 2.5)
    settings = load_settings({**env, "BACKAPP_AGENT_LIMIT_UPLOAD": "0.5"})
    assert settings.limit_upload == 0.5
    storage = HttpStorage.for_settings(settings, user_agent="test")
    assert storage.upload_limit is not None and storage.upload_limit.mbps == 0.5
    assert storage.download_limit is not None and storage.download_limit.mbps == 2.5
    storage.close()
    plain = HttpStorage.for_settings(AgentSettings(), user_agent="test")
    assert plain.upload_limit is None and plain.download_limit is None
    plain.close()


@pytest.mark.parametrize("value", [0, -3, 1e9])
def test_a_limit_out_of_range_is_refused_in_words(tmp_path: Path, value: float) -> None:
    (tmp_path / "config.json").write_text(f'{{"limitUpload": {value}}}')
    with pytest.raises(ConfigurationError, match="limitUpload must be between"):
        load_settings({"BACKAPP_AGENT_CONFIG_DIR": str(tmp_path)})
