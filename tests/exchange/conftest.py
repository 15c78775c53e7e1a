"""Fixtures for the exchange core: a migrated database, a pool on it, and a running sequencer.

    pool                    function: an asyncpg pool on ``migrated_database_url``, closed after the test
    databases               session: ``Databases``, to create (migrated) and drop databases of one's own
    exchange                function: an opened ``Sequencer`` on the pool; stopped after the test, which then
                            fails if ``invariants.problems`` finds anything
    module_exchange         module: the same on a database of its own, shared by the tests of one module that
                            use it (they run on the module's event loop: ``asyncio(loop_scope="module")``); for
                            tests that assert they changed nothing, where a new database each would only cost time
    desk                    function: an in-memory engine (``tests.support.engine.Desk``), no database
    market                  function: the test market opened on ``desk`` (``tests.support.engine.open_market``)

Everything but the desk runs against the real PostgreSQL of the session (see ``tests/conftest.py``); nothing is mocked.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
import pytest_asyncio

from exchange.sequencer import Sequencer
from tests.support.databases import create_database, drop_database
from tests.support.engine import Desk, Market, assert_invariants, open_market


class Databases:
    """Creates migrated databases on the session's server and drops them, for fixtures and state machines
    that need a database of their own."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    async def create(self, prefix: str = "tokex_test_ex") -> tuple[str, str]:
        """Create a new migrated database; return its name and DSN."""
        return await create_database(self.admin_url, prefix)

    async def drop(self, name: str) -> None:
        await drop_database(self.admin_url, name)


@asynccontextmanager
async def checked_sequencer(pool: asyncpg.Pool) -> AsyncIterator[Sequencer]:
    """A sequencer opened on ``pool``, stopped at the end, then checked: ``invariants.problems`` must find nothing."""
    sequencer = await Sequencer.open(pool)
    try:
        yield sequencer
    finally:
        await sequencer.stop()
    await assert_invariants(sequencer)


@pytest.fixture
async def pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(migrated_database_url, min_size=1, max_size=4) as created:
        yield created


@pytest.fixture
async def exchange(pool: asyncpg.Pool) -> AsyncIterator[Sequencer]:
    async with checked_sequencer(pool) as sequencer:
        yield sequencer


@pytest.fixture(scope="session")
def databases(postgres_admin_url: str) -> Databases:
    return Databases(postgres_admin_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_exchange(databases: Databases) -> AsyncIterator[Sequencer]:
    name, dsn = await databases.create("tokex_test_mod")
    try:
        async with asyncpg.create_pool(dsn, min_size=1, max_size=4) as created, checked_sequencer(created) as sequencer:
            yield sequencer
    finally:
        await databases.drop(name)


@pytest.fixture
def desk() -> Desk:
    return Desk()


@pytest.fixture
def market(desk: Desk) -> Market:
    return open_market(desk)
