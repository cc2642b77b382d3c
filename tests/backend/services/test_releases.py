"""Agent releases on SQLite and PostgreSQL with the app's local storage (and once on S3): a signed
build stored and offered; the refusals that store nothing; owners' policies; the heartbeat's cost."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from backend.accounts.tables import User
from backend.agents.tables import AgentRelease, AgentUpdatePolicy
from backend.errors import Conflict, InvalidInput, NotFound
from backend.services import Services
from backend.services.releases import ReleaseService
from backend.settings import Settings
from tests.support.agent_releases import OTHER_KEY, public_b64, signed_build
from tests.support.api import ApiClient, local_path
from tests.support.queries import count_queries
from tests.support.s3 import S3Endpoint, stored
from tests.support.settings import make_settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url, release_public_key=public_b64())


async def owner(client: ApiClient) -> uuid.UUID:
    return uuid.UUID((await client.signup())["id"])


async def add(releases: ReleaseService, folder: Path, platform: str, version: str) -> bytes:
    path, signature = signed_build(folder, platform, version)
    await releases.add(path, platform, version, signature)
    return path.read_bytes()


async def nothing_stored(services: Services) -> bool:
    listing = await services.storage.list_objects("releases/")
    return await AgentRelease.count() == 0 and not listing.objects


async def test_add_then_offer_the_newest_by_version_not_by_text(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    user_id = await owner(client)
    releases = services.releases
    await add(releases, tmp_path, "linux", "1.9.0")
    build = await add(releases, tmp_path, "linux", "1.10.0")
    await add(releases, tmp_path, "win32", "1.11.0")

    offer = await releases.offer(user_id, "linux", "1.9.0")
    assert offer is not None and offer.version == "1.10.0"
    assert offer.sha256 == hashlib.sha256(build).hexdigest() and offer.size == len(build)
    got = await client.raw.get(local_path(offer.url))
    assert got.status_code == 200 and got.content == build
    # Up to date, or newer than anything published (``latest`` never downgrades).
    assert await releases.offer(user_id, "linux", "1.10.0") is None
    assert await releases.offer(user_id, "linux", "2.0") is None
    # The platform's own newest build, never another platform's.
    win = await releases.offer(user_id, "win32", "1.0")
    assert win is not None and win.version == "1.11.0"
    assert (await services.storage.head("releases/win32/1.11.0/backapp-agent.exe")) is not None
    assert [(r.platform, r.version) for r in await releases.releases()] == [
        ("linux", "1.10.0"),
        ("linux", "1.9.0"),
        ("win32", "1.11.0"),
    ]


async def test_no_update_without_a_usable_version_or_platform(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    user_id = await owner(client)
    await add(services.releases, tmp_path, "linux", "2.0.0")
    for platform, version in [
        ("linux", None),
        ("linux", ""),
        ("linux", "not a version"),
        ("plan9", "1.0"),
        (None, "1.0"),
        ("darwin", "1.0"),  # nothing published for it
    ]:
        assert await services.releases.offer(user_id, platform, version) is None, (
            platform,
            version,
        )


async def test_refusals_store_nothing(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    releases = services.releases
    path, signature = signed_build(tmp_path, "linux", "1.2.4")
    other_path, other_signature = signed_build(tmp_path, "linux", "1.2.5", key=OTHER_KEY)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    cases = [
        ((path, "plan9", "1.2.4", signature), "platform", "unknown platform 'plan9'"),
        ((path, "linux", "1.2.x", signature), "version", "not a version"),
        ((path, "linux", " 1.2.4", signature), "version", "not a version"),
        ((path, "linux", "1." * 40 + "1", signature), "version", "not a version"),
        ((path, "linux", "1.2.5", signature), "signature", "not signed by the release key"),
        ((path, "darwin", "1.2.4", signature), "signature", "not signed by the release key"),
        ((other_path, "linux", "1.2.5", other_signature), "signature", "not signed by"),
        ((path, "linux", "1.2.4", "not base64!"), "signature", "not base64"),
        ((empty, "linux", "1.2.4", signature), "file", "is empty"),
        ((tmp_path / "missing", "linux", "1.2.4", signature), "file", "is not a file"),
    ]
    for args, field, words in cases:
        with pytest.raises(InvalidInput, match=words) as caught:
            await releases.add(*args)
        assert caught.value.field == field
        assert await nothing_stored(services), args

    await releases.add(path, "linux", "1.2.4", signature)
    before = await services.storage.list_objects("releases/")
    # The same release again, or the same version written otherwise (1.2.4.0 == 1.2.4).
    same, same_signature = signed_build(tmp_path, "linux", "1.2.4.0", content=b"other bytes")
    for args in [(path, "linux", "1.2.4", signature), (same, "linux", "1.2.4.0", same_signature)]:
        with pytest.raises(Conflict, match="exists already"):
            await releases.add(*args)
    assert await AgentRelease.count() == 1
    assert await services.storage.list_objects("releases/") == before
    assert (await services.storage.get_bytes("releases/linux/1.2.4/backapp-agent")) == (
        path.read_bytes()
    )


async def test_remove_deletes_the_row_and_the_build(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    user_id = await owner(client)
    await add(services.releases, tmp_path, "linux", "1.0.0")
    await add(services.releases, tmp_path, "linux", "1.1.0")
    removed = await services.releases.remove("linux", "1.1")
    assert removed.version == "1.1.0"
    offer = await services.releases.offer(user_id, "linux", "0.9")
    assert offer is not None and offer.version == "1.0.0"
    assert await services.storage.head("releases/linux/1.1.0/backapp-agent") is None
    with pytest.raises(NotFound, match="no release linux 1.1.0"):
        await services.releases.remove("linux", "1.1.0")
    with pytest.raises(InvalidInput, match="unknown platform"):
        await services.releases.remove("beos", "1.0.0")


async def test_policies_pin_with_downgrade_and_hold(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    user_id = await owner(client)
    releases = services.releases
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await add(releases, tmp_path, "linux", version)
    await add(releases, tmp_path, "darwin", "1.3.0")
    assert (await releases.policy(user_id)).policy == "latest"

    pinned = await releases.set_policy(user_id, "pin", "1.1")
    assert (pinned.policy, pinned.version) == ("pin", "1.1.0")  # the release's own spelling
    down = await releases.offer(user_id, "linux", "1.2.0")
    assert down is not None and down.version == "1.1.0"  # a downgrade to the pinned version
    up = await releases.offer(user_id, "linux", "1.0.0")
    assert up is not None and up.version == "1.1.0"
    assert await releases.offer(user_id, "linux", "1.1.0") is None
    # Pinned to a version this platform has no build of: it stays where it is.
    await releases.set_policy(user_id, "pin", "1.3.0")
    assert await releases.offer(user_id, "linux", "1.0.0") is None
    assert (await releases.offer(user_id, "darwin", "1.0.0")) is not None

    await releases.set_policy(user_id, "hold", None)
    assert await releases.offer(user_id, "linux", "1.0.0") is None
    await releases.set_policy(user_id, "latest", None)
    latest = await releases.offer(user_id, "linux", "1.0.0")
    assert latest is not None and latest.version == "1.2.0"
    assert await AgentUpdatePolicy.count() == 1  # one row per owner, updated in place


async def test_bad_policies_change_nothing(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    user_id = await owner(client)
    releases = services.releases
    await add(releases, tmp_path, "linux", "1.0.0")
    await releases.set_policy(user_id, "hold", None)
    for policy, version, field, words in [
        ("pin", "9.9.9", "version", "no release 9.9.9"),
        ("pin", None, "version", "needs the version"),
        ("pin", "banana", "version", "not a version"),
        ("latest", "1.0.0", "version", "pin only"),
        ("newest", None, "policy", "one of latest, pin, hold"),
    ]:
        with pytest.raises(InvalidInput, match=words) as caught:
            await releases.set_policy(user_id, policy, version)
        assert caught.value.field == field
        assert (await releases.policy(user_id)).policy == "hold"


async def test_policies_are_per_owner_and_go_with_the_owner(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    first = await owner(client)
    second = (await services.accounts.create_user("other@example.com", "correct horse")).id
    await add(services.releases, tmp_path, "linux", "1.0.0")
    await services.releases.set_policy(first, "hold", None)
    assert await services.releases.offer(first, "linux", "0.1") is None
    assert await services.releases.offer(second, "linux", "0.1") is not None
    await User.delete().where(User.id == first)
    assert await AgentUpdatePolicy.count() == 0


async def test_the_heartbeat_reads_at_most_the_owners_policy(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    """The release list comes from the process's copy: one indexed read per offer at most, none
    when nothing is published for the platform. A release another process adds shows once the
    copy is older than BACKAPP_RELEASE_CACHE_SECONDS."""
    user_id = await owner(client)
    now = [1000.0]
    releases = ReleaseService(services.settings, services.storage, clock=lambda: now[0])
    elsewhere = ReleaseService(services.settings, services.storage)  # the command line
    assert await releases.offer(user_id, "linux", "1.0") is None  # loads the (empty) list
    await add(elsewhere, tmp_path, "linux", "2.0")
    with count_queries(own_task_only=True) as log:
        assert await releases.offer(user_id, "linux", "1.0") is None
    assert len(log) == 0, log.statements
    now[0] += services.settings.release_cache_seconds
    assert await releases.offer(user_id, "linux", "1.0") is not None  # list read again
    with count_queries(own_task_only=True) as log:
        for _ in range(5):
            assert await releases.offer(user_id, "linux", "1.0") is not None
        assert await releases.offer(user_id, "darwin", "1.0") is None
        assert await releases.offer(user_id, "linux", None) is None
    assert len(log) == 5, log.statements
    # This process's own add or remove is seen at once.
    await releases.remove("linux", "2.0")
    assert await releases.offer(user_id, "linux", "1.0") is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_release_on_s3(
    s3_app: tuple[ApiClient, Services],
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    client, services = s3_app
    user_id = await owner(client)
    path, signature = signed_build(tmp_path, "darwin", "3.1.4", content=b"x" * 70000)
    # The app's own settings name no release key: the same storage, with the tests' key.
    releases = ReleaseService(
        replace(services.settings, release_public_key=public_b64()), services.storage
    )
    await releases.add(path, "darwin", "3.1.4", signature)
    assert stored(s3_server, s3_bucket)["releases/darwin/3.1.4/backapp-agent"] == 70000
    offer = await releases.offer(user_id, "darwin", "3.0")
    assert offer is not None
    async with httpx.AsyncClient() as web:
        got = await web.get(offer.url)
    assert got.status_code == 200 and got.content == path.read_bytes()
    await releases.remove("darwin", "3.1.4")
    assert "releases/darwin/3.1.4/backapp-agent" not in stored(s3_server, s3_bucket)
