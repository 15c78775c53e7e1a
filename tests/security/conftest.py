"""Fixtures for the security tests: a real server on a database of its own that a test can restart.

    restartable   function: a ``Restartable``; ``start()`` serves its database, ``stop()`` shuts the server down
"""

import secrets
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from api.app import create_app
from tests.support.api_server import NO_LIMITS, Live, bootstrap, fresh_database, serve


class Restartable:
    """A server on one database and master key, started and stopped at will: keys and state outlive it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.master_key = secrets.token_bytes(32)
        self.live: Live | None = None
        self.admin: tuple[int, str, str] | None = None
        self._stack: ExitStack | None = None

    def start(self) -> Live:
        assert self._stack is None, "already started"
        self._stack = ExitStack()
        live = self._stack.enter_context(serve(create_app(self.dsn, master_key=self.master_key,
                                                          rate_limits=NO_LIMITS), self.master_key))
        live.dsn = self.dsn
        if self.admin is None:
            bootstrap(live)
            self.admin = (live.admin_id, live.admin_key, live.admin_secret)
        live.admin_id, live.admin_key, live.admin_secret = self.admin
        self.live = live
        return live

    def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack, self.live = self._stack, None, None
            stack.close()


@pytest.fixture
def restartable(postgres_admin_url: str) -> Iterator[Restartable]:
    with fresh_database(postgres_admin_url) as dsn:
        server = Restartable(dsn)
        try:
            yield server
        finally:
            server.stop()
