"""Databases of their own on the session's PostgreSQL, and a TOKEX_HOME the embedded server can use.

Databases are cloned from a migrated template, so a test sees no data of another and pays for the schema once
per session, not once per database; ``migrated=False`` makes an empty one from template0 instead, for tests of
migrating itself. The TOKEX_HOME is made with `tempfile` rather than pytest's tmp_path: pytest's base folder is
mode 0700, and when the suite runs as root the server runs as another user, who could not enter it.

The template
    is named by a hash of the migration files (``tokex_template_<hash>``), so a change to any of them builds a
    new one, and sessions of different trees on one server each find their own. It is built under an advisory
    lock on the admin database, so sessions starting together build it once, and under a temporary name renamed
    when complete, so a session killed half-way leaves no half-migrated template behind.
"""

import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from exchange.database.migrations import discover, migrate
from tests.support.sync import run_sync

# "tokextpl" read as a big-endian int64: every session on the server contends for the same lock.
TEMPLATE_LOCK_KEY = int.from_bytes(b"tokextpl", "big", signed=True)

# Admin DSN -> the name of its migrated template, built at most once per session.
_templates: dict[str, str] = {}


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


def template_name() -> str:
    """The migrated template's name for the migration files of this tree."""
    digest = hashlib.sha256()
    for migration in discover():
        digest.update(migration.path.name.encode())
        digest.update(migration.path.read_bytes())
    return f"tokex_template_{digest.hexdigest()[:16]}"


async def migrated_template(admin_url: str) -> str:
    """Return the name of the migrated template on `admin_url`'s server, building it if no session has."""
    if admin_url in _templates:
        return _templates[admin_url]
    name = template_name()
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK_KEY)
        if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name):
            building = f"{name}_building"
            # Left by a session killed while building: nobody else builds while we hold the lock.
            await conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{building}" TEMPLATE template0')
            await migrate(with_database(admin_url, building))
            await conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
            await conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE true')
    finally:
        # Closing releases the advisory lock.
        await conn.close()
    _templates[admin_url] = name
    return name


async def create_database(admin_url: str, prefix: str, *, migrated: bool = True) -> tuple[str, str]:
    """Create a database named after ``prefix``, migrated or empty; return its name and DSN."""
    template = await migrated_template(admin_url) if migrated else "template0"
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin_sql(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    await admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(admin_url: str, prefix: str = "tokex_test", *, migrated: bool = True) -> Iterator[str]:
    """A new database on the test server, migrated or empty, dropped at the end; yields its DSN. Callable from
    sync code."""
    name, dsn = run_sync(lambda: create_database(admin_url, prefix, migrated=migrated))
    try:
        yield dsn
    finally:
        run_sync(lambda: drop_database(admin_url, name))


def reachable_temp_home(prefix: str = "tokex-test-") -> Path:
    """Make a temporary TOKEX_HOME that the embedded server's user can enter (see the module docstring)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)
    return home
