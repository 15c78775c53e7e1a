"""Fixtures for the load generator's, drills' and fuzzers' short runs.

    live      module: a server on a new database with the first admin (``api_server.live_server``)

The servers of ``tests/api/api_server.py`` and the feed helpers of ``tests/api/feed/feed_support.py`` are reused,
so those folders go on ``sys.path`` as pytest would put them for their own tests.
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api" / "feed"))

from api_server import Live, live_server


@pytest.fixture(scope="module")
def live(postgres_admin_url: str) -> Iterator[Live]:
    with live_server(postgres_admin_url) as server:
        yield server
