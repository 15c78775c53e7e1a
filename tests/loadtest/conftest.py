"""Fixtures for the load generator's, drills' and fuzzers' short runs.

    live      module: a server on a new database with the first admin (``tests.support.api_server.live_server``)
"""

from collections.abc import Iterator

import pytest

from tests.support.api_server import Live, live_server


@pytest.fixture(scope="module")
def live(postgres_admin_url: str) -> Iterator[Live]:
    with live_server(postgres_admin_url) as server:
        yield server
