"""Fixtures for the whole suite: one PostgreSQL server per session, a fresh database per test.

The server is the one named by TOKEX_TEST_DATABASE_URL when set (its role must be allowed to CREATE
DATABASE), else the embedded server, started on first use and stopped at the end, in a temporary TOKEX_HOME its server
user can enter (``tests.support.databases.reachable_temp_home``).

    database_url          session: an empty database created for this run, dropped at the end
    migrated_database_url function: a new migrated database for one test, dropped after it
    fresh_database_url    function: a new empty database for one test (of migrating itself), dropped after it
    postgres_admin_url    session: the server's own DSN, for tests that manage databases themselves
    reachable_home        function: an empty TOKEX_HOME for a test that runs its own embedded server;
                          any server still running there afterwards is killed
    live                  module: a real API server on a new database with the first admin
                          (``tests.support.api_server.live_server``); the feed tests serve their own
    fuzz                  module: funded accounts and signers on ``live`` for the schemathesis fuzzers

Databases are cloned from one migrated template per session (``tests.support.databases``), so a test sees no
data of another; empty ones are made from template0. Plain helpers the folders share are in
``tests/support/``. pytest-asyncio runs in auto mode (pyproject.toml): `async def test_...` needs no marker.
The fixtures themselves are sync, so they work with any event loop scope.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.database.embedded import EmbeddedPostgres
from exchange.lifetime import is_running
from tests.support.api_server import Live, live_server
from tests.support.databases import fresh_database, reachable_temp_home
from tests.support.fuzz import Fuzz, set_up_fuzz


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    external = os.environ.get("TOKEX_TEST_DATABASE_URL")
    if external:
        yield external
        return
    home = reachable_temp_home()
    server = EmbeddedPostgres(home)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_database(postgres_admin_url, "tokex_test", migrated=False) as dsn:
        yield dsn


@pytest.fixture
def migrated_database_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_database(postgres_admin_url, "tokex_test_fn") as dsn:
        yield dsn


@pytest.fixture
def fresh_database_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_database(postgres_admin_url, "tokex_test_fn", migrated=False) as dsn:
        yield dsn


@pytest.fixture
def reachable_home() -> Iterator[Path]:
    home = reachable_temp_home()
    try:
        yield home
    finally:
        for pid in EmbeddedPostgres(home).running_postmasters():
            # Immediate shutdown: the test is over and may have failed half-way.
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and is_running(pid):
                time.sleep(0.05)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def live(postgres_admin_url: str) -> Iterator[Live]:
    with live_server(postgres_admin_url) as server:
        yield server


@pytest.fixture(scope="module")
def fuzz(live: Live) -> Fuzz:
    return set_up_fuzz(live)
