"""Apply the numbered SQL files of `sql/` to a database, forward only.

Where
    `sql/` is a package whose data are the migration files, so an installed tokex (a wheel, `pip install .`)
    carries them as an editable one does; `SQL_DIR` is wherever the import finds it. A missing folder is an
    error: started without its migrations, a server would run on whatever schema the database has.

Files
    `sql/NNN_name.sql`: NNN is the version (any number of digits, compared as an integer), name is
    lower_snake. Each file runs as one simple-protocol script, so it may hold several statements, but
    no transaction control of its own (BEGIN/COMMIT) and nothing that refuses to run inside a
    transaction (CREATE INDEX CONCURRENTLY). Files are never edited once applied: a change is a new file.

Bookkeeping
    `schema_migration(version, name, applied_at)` records what has run. Each file runs in its own
    transaction together with its row there, so a failing file leaves nothing behind and the ones
    before it stay applied.

Concurrency
    Two processes starting together both call `migrate()`; a session advisory lock on a fixed key,
    held for the whole run, makes the second wait and then find nothing left to do.

Refusals (each names the file and what to do)
    A version applied in the database but missing here (the code is older than the database), and a
    pending file numbered below an applied one (it would run out of order on some databases only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from exchange.database.queries import sql

SQL_DIR = Path(str(resources.files("sql")))

# "tokexmig" read as a big-endian int64; fixed so every process contends for the same lock.
LOCK_KEY = int.from_bytes(b"tokexmig", "big", signed=True)

_FILE_NAME = re.compile(r"^(\d+)_([a-z0-9_]+)\.sql$")

WAIT_FOR_LOCK = sql("wait_for_migration_lock")
RELEASE_LOCK = sql("release_migration_lock")
CREATE_TABLE = sql("create_schema_migration")
APPLIED = sql("applied_migrations")
RECORD = sql("record_migration")


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file."""


@dataclass(frozen=True)
class Migration:
    """One `NNN_name.sql` file."""

    version: int
    name: str
    path: Path


def discover(folder: Path = SQL_DIR) -> list[Migration]:
    """Return the migrations in `folder` by version; raise if the folder is missing, or on a bad name or a
    duplicate version.
    """
    if not folder.is_dir():
        raise MigrationError(f"no migrations folder at {folder}: this install of tokex lacks its sql/ files; "
                             "reinstall it from a wheel or source tree that has them")
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: a migration file must be named NNN_lower_snake_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name} and {found[version].path.name} share version {version}; renumber one of them"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


async def migrate(target: str | asyncpg.Connection, folder: Path | None = None) -> list[int]:
    """Apply the pending migrations of `folder` (default: `SQL_DIR`, the sql/ package); return their versions.

    `target` is a DSN or an open connection (left open, and outside any transaction).
    """
    folder = folder if folder is not None else SQL_DIR
    migrations = discover(folder)
    conn = await asyncpg.connect(target) if isinstance(target, str) else target
    try:
        await conn.execute(WAIT_FOR_LOCK, LOCK_KEY)
        try:
            return await _apply(conn, folder, migrations)
        finally:
            # A lost connection has released the lock already.
            if not conn.is_closed():
                await conn.execute(RELEASE_LOCK, LOCK_KEY)
    finally:
        if isinstance(target, str):
            await conn.close()


async def _apply(conn: asyncpg.Connection, folder: Path, migrations: list[Migration]) -> list[int]:
    await conn.execute(CREATE_TABLE)
    applied = {row["version"] for row in await conn.fetch(APPLIED)}

    known = {m.version for m in migrations}
    unknown = sorted(applied - known)
    if unknown:
        raise MigrationError(
            f"the database has migration(s) {unknown} that are not in {folder}: it was migrated by newer "
            "code; run that version (migrations go forward only)"
        )
    pending = [m for m in migrations if m.version not in applied]
    latest = max(applied, default=None)
    for m in pending:
        if latest is not None and m.version < latest:
            raise MigrationError(
                f"{m.path.name} is numbered below {latest}, which is already applied; renumber it above "
                f"{max(known)} so every database applies it in the same order"
            )

    done = []
    for m in pending:
        script = m.path.read_text(encoding="utf-8")
        try:
            async with conn.transaction():
                await conn.execute(script)
                await conn.execute(RECORD, m.version, m.name)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"{m.path.name} failed and was rolled back: {type(exc).__name__}: {exc}"
            ) from exc
        done.append(m.version)
    return done
