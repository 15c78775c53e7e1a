"""Fixtures for the feed tests: real servers (``feed_support.feed_server``) and websockets clients.

    live      module: a server with the default feed limits, on a new database
    market    function: a fresh instrument on ``live`` with three traders (``feed_support.Market``)

The servers of ``tests/api/api_server.py`` are reused, so that folder goes on ``sys.path`` as pytest would put
it for its own tests.
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api_server import Live
from feed_support import Market, feed_server, open_market


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
