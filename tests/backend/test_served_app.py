"""``backapp serve``'s app factory: the app, and once it has started, what start-up made is frozen
out of the cyclic garbage collector's full passes."""

from __future__ import annotations

import gc

from backend.app import create_app, create_served_app
from backend.settings import Settings


async def test_the_served_app_freezes_what_start_up_made(settings: Settings) -> None:
    gc.unfreeze()
    try:
        plain = create_app(settings)
        async with plain.lifespan():
            assert gc.get_freeze_count() == 0
        served = create_served_app(settings)
        async with served.lifespan():
            # Every module, route and service made so far: tens of thousands of objects.
            assert gc.get_freeze_count() > 20_000
            assert served.state.runtime is not None
    finally:
        gc.unfreeze()
