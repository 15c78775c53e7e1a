"""Databases of their own on the session's PostgreSQL, and a TOKEX_HOME the embedded server can use.

Databases are made from template0, so a test sees no data of another. The TOKEX_HOME is made with `tempfile`
rather than pytest's tmp_path: pytest's base folder is mode 0700, and when the suite runs as root the server
runs as another user, who could not enter it.
"""

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.sync import run_sync


def with_database(dsn: str, database: str) -> str:
    """Return `dsn` pointing at `database` instead (host, port, user and options kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def admin_sql(admin_url: str, statement: str) -> None:
    """Run one statement on its own connection (CREATE and DROP DATABASE cannot run in a transaction)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(admin_url: str, prefix: str) -> tuple[str, str]:
    """Create an empty database named after ``prefix``; return its name and DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin_sql(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0')
    return name, with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    await admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(admin_url: str, prefix: str = "tokex_test") -> Iterator[str]:
    """A new empty database on the test server, dropped at the end; yields its DSN. Callable from sync code."""
    name, dsn = run_sync(lambda: create_database(admin_url, prefix))
    try:
        yield dsn
    finally:
        run_sync(lambda: drop_database(admin_url, name))


def reachable_temp_home(prefix: str = "tokex-test-") -> Path:
    """Make a temporary TOKEX_HOME that the embedded server's user can enter (see the module docstring)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)
    return home
