"""``POST /api/agent/snapshot/start`` while another run of the same repository adds packs: the
pack count and the live-pack bitmap it answers agree (the agent refuses a bitmap naming a pack at
or past the count, and the run failed)."""

from __future__ import annotations

from typing import Any

from backend.services import Services
from desktop_agent.engine.repo_protocol import decode_bitmap
from tests.support.api import ApiClient
from tests.support.repos import Repo, name, new_repo, pack


async def test_a_pack_added_while_a_snapshot_starts_is_counted(
    s3_app: tuple[ApiClient, Services],
) -> None:
    client, services = s3_app
    first = await new_repo(client)
    await first.snapshot([pack()])
    other_config = await client.create_config(
        (await client.get("/api/agents")).json()["agents"][0]["id"],
        name="Other",
        options={"type": "incremental"},
    )
    other = Repo(client, first.key, other_config["id"])
    running = (await other.start())["backupId"]

    parent = services.snapshots._parent
    added = pack()

    async def pack_added_meanwhile(*args: Any) -> Any:
        # The other run registers a pack after this start read the repository's row.
        await other.upload(running, [("data", name(added), added)])
        return await parent(*args)

    services.snapshots._parent = pack_added_meanwhile  # type: ignore[method-assign]
    started = await first.start()
    services.snapshots._parent = parent  # type: ignore[method-assign]
    repo = started["repository"]
    live = decode_bitmap(repo["livePacks"], limit=int(repo["packCount"]))
    assert other.seqs[added] in live and repo["packCount"] == 2
