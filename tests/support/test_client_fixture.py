"""The ``client`` fixture hands a test a server whose start-up round is over."""

from __future__ import annotations

from backend.services import Services
from tests.support.api import ApiClient


async def test_the_start_up_round_is_over_before_the_test_begins(
    client: ApiClient, services: Services
) -> None:
    """Tests drive the periodic rounds with their own clock. The round the runtime runs at
    start-up uses the real one, on its own thread: still running, it once marked an agent a test
    had just made silent offline before the test's own presence round could (and that round then
    found nothing to mark)."""
    assert services.tasks.first_round_over
