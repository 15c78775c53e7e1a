"""Fixtures for the whole suite: one PostgreSQL server per session, a fresh database per test.

The server is the one named by TOKEX_TEST_DATABASE_URL when set (its role must be allowed to CREATE
DATABASE), else the embedded server, started on first use in a temporary TOKEX_HOME and stopped at the
end. That TOKEX_HOME is made with `tempfile` rather than pytest's tmp_path: pytest's base folder is mode
0700, and when the suite runs as root the server runs as another user, who could not enter it.

    database_url          session: a database created for this run, dropped at the end
    fresh_database_url    function: a new empty database for one test, dropped after it
    postgres_admin_url    session: the server's own DSN, for tests that manage databases themselves
    reachable_home        function: an empty TOKEX_HOME for a test that runs its own embedded server;
                          any server still running there afterwards is killed

Databases are made from template0, so a test sees no data of another. pytest-asyncio runs in auto
mode (pyproject.toml): `async def test_...` needs no marker. The fixtures themselves are sync, so they
work with any event loop scope.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
import pytest

from exchange.database.embedded import EmbeddedPostgres


def with_database(dsn: str, database: str) -> str:
    """Return `dsn` pointing at `database` instead (host, port, user and options kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def run_sync(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from sync code, on its own thread and event loop.

    A thread keeps it clear of whatever loop pytest-asyncio has set up on the main thread.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _create_database(admin_url: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    run_sync(lambda: _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return name, with_database(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    run_sync(lambda: _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _running(pid: int) -> bool:
    # An exited server may stay a zombie until init reaps it; that counts as stopped.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reachable_temp_home(prefix: str = "tokex-test-") -> Path:
    """Make a temporary TOKEX_HOME that the embedded server's user can enter (see the module docstring)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)
    return home


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
    name, dsn = _create_database(postgres_admin_url, "tokex_test")
    try:
        yield dsn
    finally:
        _drop_database(postgres_admin_url, name)


@pytest.fixture
def fresh_database_url(postgres_admin_url: str) -> Iterator[str]:
    name, dsn = _create_database(postgres_admin_url, "tokex_test_fn")
    try:
        yield dsn
    finally:
        _drop_database(postgres_admin_url, name)


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
            while time.monotonic() < deadline and _running(pid):
                time.sleep(0.05)
        shutil.rmtree(home, ignore_errors=True)
