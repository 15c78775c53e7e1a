"""Migrations against a real database: toy files in a temporary folder, never the exchange's schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from exchange.database.migrations import SQL_DIR, MigrationError, discover, migrate


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


async def query(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


TOY = {
    # Numeric order matters: 10 must run after 2, although "10_" sorts before "2_" as text.
    "1_create_item.sql": "CREATE TABLE item (id int PRIMARY KEY, label text);",
    "2_add_first.sql": "INSERT INTO item VALUES (1, 'first');",
    "10_add_price.sql": "ALTER TABLE item ADD COLUMN price bigint; UPDATE item SET price = 100;",
}


def test_sql_dir_is_the_repository_sql_folder() -> None:
    assert SQL_DIR.name == "sql"
    assert (SQL_DIR.parent / "pyproject.toml").exists()


async def test_the_session_and_each_test_get_separate_empty_databases(
    database_url: str, fresh_database_url: str
) -> None:
    assert database_url != fresh_database_url
    for dsn in (database_url, fresh_database_url):
        assert await query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []


async def test_the_repository_migrations_apply_to_an_empty_database(fresh_database_url: str) -> None:
    assert await migrate(fresh_database_url) == [m.version for m in discover()]
    assert await migrate(fresh_database_url) == []


async def test_migrations_apply_once_in_number_order_and_are_recorded(
    fresh_database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path, TOY)
    assert await migrate(fresh_database_url, folder) == [1, 2, 10]
    rows = await query(fresh_database_url, "SELECT * FROM schema_migration ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [
        (1, "create_item"), (2, "add_first"), (10, "add_price")
    ]
    assert all(r["applied_at"] is not None for r in rows)
    assert [tuple(r) for r in await query(fresh_database_url, "SELECT id, label, price FROM item")] == [
        (1, "first", 100)
    ]

    assert await migrate(fresh_database_url, folder) == []

    write(tmp_path, {"11_add_second.sql": "INSERT INTO item VALUES (2, 'second', 200);"})
    assert await migrate(fresh_database_url, folder) == [11]
    assert len(await query(fresh_database_url, "SELECT * FROM item")) == 2


async def test_migrate_accepts_an_open_connection_and_leaves_it_open(
    fresh_database_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await migrate(conn, write(tmp_path, TOY)) == [1, 2, 10]
        assert not conn.is_closed()
        assert await conn.fetchval("SELECT count(*) FROM item") == 1
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(fresh_database_url: str, tmp_path: Path) -> None:
    folder = write(tmp_path, {
        **TOY,
        # Long enough that both runs overlap: the second must wait on the advisory lock.
        "3_slow.sql": "SELECT pg_sleep(0.3); INSERT INTO item VALUES (3, 'slow');",
    })
    results = await asyncio.gather(*(migrate(fresh_database_url, folder) for _ in range(3)))
    assert sorted(results) == [[], [], [1, 2, 3, 10]]
    assert len(await query(fresh_database_url, "SELECT * FROM item")) == 2


async def test_a_failing_migration_rolls_back_only_itself_and_names_the_file(
    fresh_database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path, {
        "1_create_item.sql": TOY["1_create_item.sql"],
        "2_broken.sql": "CREATE TABLE half_done (id int); INSERT INTO item VALUES (1, 'a'), (1, 'again');",
        "3_never.sql": "CREATE TABLE never (id int);",
    })
    with pytest.raises(MigrationError, match=r"2_broken\.sql failed.*UniqueViolationError"):
        await migrate(fresh_database_url, folder)

    tables = {r["tablename"] for r in await query(fresh_database_url, "SELECT tablename FROM pg_tables")}
    assert "item" in tables
    assert not tables & {"half_done", "never"}
    recorded = await query(fresh_database_url, "SELECT version FROM schema_migration")
    assert [r["version"] for r in recorded] == [1]
    assert await query(fresh_database_url, "SELECT * FROM item") == []

    (folder / "2_broken.sql").write_text("INSERT INTO item VALUES (1, 'fixed');")
    assert await migrate(fresh_database_url, folder) == [2, 3]


async def test_a_file_numbered_below_an_applied_one_is_refused(
    fresh_database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path, TOY)
    await migrate(fresh_database_url, folder)
    write(tmp_path, {"5_late.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"5_late\.sql is numbered below 10.*renumber"):
        await migrate(fresh_database_url, folder)


async def test_a_database_newer_than_the_code_is_refused(fresh_database_url: str, tmp_path: Path) -> None:
    folder = write(tmp_path, TOY)
    await migrate(fresh_database_url, folder)
    (folder / "10_add_price.sql").unlink()
    with pytest.raises(MigrationError, match=r"\[10\].*newer code"):
        await migrate(fresh_database_url, folder)


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"1_ok.sql": "", "01_again.sql": ""})
    with pytest.raises(MigrationError, match="share version 1"):
        discover(tmp_path)
    (tmp_path / "01_again.sql").unlink()
    write(tmp_path, {"2-Bad Name.sql": ""})
    with pytest.raises(MigrationError, match="NNN_lower_snake_name"):
        discover(tmp_path)
