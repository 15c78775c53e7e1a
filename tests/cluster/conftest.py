"""Fixtures for the multi-process layout: a real NATS server with JetStream, on a free port.

    nats_server   module: an embedded nats-server (``exchange.broker.embedded``) in a TOKEX_HOME of its own,
                  stopped after the module; yields its URL
    pool          function: an asyncpg pool on a new migrated database (as in ``tests/exchange``)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.support.broker import nats_server as embedded_nats


@pytest.fixture(scope="module")
def nats_server() -> Iterator[str]:
    with embedded_nats("tokex-nats-") as url:
        yield url


@pytest.fixture
async def pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(migrated_database_url, min_size=1, max_size=4) as created:
        yield created
