"""Fixtures for the feed tests: real servers (``tests.support.feed.feed_server``) and websockets clients.

    live      module: a server with the default feed limits, on a new database
    market    function: a fresh instrument on ``live`` with three traders (``tests.support.feed.Market``)
"""

from collections.abc import Iterator

import pytest

from tests.support.api_server import Live
from tests.support.feed import Market, feed_server, open_market


@pytest.fixture(scope="module")
def live(postgres_admin_url: str) -> Iterator[Live]:
    with feed_server(postgres_admin_url) as server:
        yield server


@pytest.fixture
async def market(live: Live) -> Market:
    created = await open_market(live)
    yield created
    for client in (created.issuer, *created.traders):
        await client.aclose()
