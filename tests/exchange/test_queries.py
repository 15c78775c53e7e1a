"""The named statements of sql/queries: each one parses in PostgreSQL, and the loader refuses a broken file."""

import re
from pathlib import Path

import asyncpg
import pytest

from exchange import indexer, store
from exchange.database.queries import STATEMENTS, QueryError, load, parse, sql
from exchange.records import Instrument, Order, Package, RoutedOrder

SCRIPTS = {"writer_settings", "default_planner"}
"""Run as simple-protocol scripts of several statements, so they are executed, not prepared."""


async def test_every_statement_parses(migrated_database_url: str) -> None:
    conn = await asyncpg.connect(migrated_database_url)
    try:
        for name, text in STATEMENTS.items():
            transaction = conn.transaction()
            await transaction.start()
            try:
                if name in SCRIPTS:
                    await conn.execute(text)
                else:
                    await conn.prepare(text)
            except asyncpg.PostgresError as exc:
                pytest.fail(f"the query {name!r} does not parse: {exc}")
            finally:
                await transaction.rollback()
    finally:
        await conn.close()


async def test_the_batch_statement_takes_the_arrays_store_sends(migrated_database_url: str) -> None:
    conn = await asyncpg.connect(migrated_database_url)
    try:
        statement = await conn.prepare(store.BATCH.statement)
        assert len(statement.get_parameters()) == store.BATCH.parameters
    finally:
        await conn.close()


def columns(statement: str) -> tuple[str, ...]:
    """The column list of an INSERT, or the select list of a SELECT, without table prefixes."""
    insert = re.search(r"INSERT INTO \w+ \(([^)]*)\)", statement)
    names = insert.group(1) if insert else re.search(r"SELECT (.*?)\sFROM ", statement, re.S).group(1)
    return tuple(re.sub(r"^\w+\.", "", name.strip()).split(" AS ")[-1] for name in names.split(","))


@pytest.mark.parametrize(("statement", "fields"), [
    (store.INSERT_INSTRUMENT, Instrument.ROW_FIELDS),
    (store.INSERT_ROUTED_ORDER, RoutedOrder.ROW_FIELDS),
    (store.UPSERT_PACKAGE, Package.__struct_fields__),
    (store.PACKAGES, Package.__struct_fields__),
    (store.OPEN_ORDERS, Order.__struct_fields__),
    (store.ORDER_BY_ID, Order.__struct_fields__),
    (indexer.INSERT, indexer.IndexRow.__struct_fields__),
])
def test_statements_list_their_records_fields_in_order(statement: str, fields: tuple[str, ...]) -> None:
    assert columns(statement) == tuple(fields)


def test_the_trailing_volume_is_one_statement() -> None:
    volume = [name for name, text in STATEMENTS.items() if "date_trunc('day'" in text]
    assert volume == ["daily_volume"]


def test_a_file_reads_as_named_statements_with_their_comments() -> None:
    found = parse("-- a file's header\n\n-- name: one\n-- why\nSELECT 1;\n\n-- name: two_2\nSELECT\n  2;\n", "x.sql")
    assert found == {"one": "-- why\nSELECT 1;", "two_2": "SELECT\n  2;"}


@pytest.mark.parametrize(("text", "error"), [
    ("-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;\n", "x.sql:3: the query 'one' is named twice"),
    ("-- name: Bad-Name\nSELECT 1;\n", "x.sql:1: 'Bad-Name' is not a lower_snake name"),
    ("SELECT 1;\n-- name: one\nSELECT 1;\n", "x.sql:1: a statement before the first"),
    ("-- name: one\n-- only a comment\n-- name: two\nSELECT 2;\n", "x.sql:3: the query 'one' has no statement"),
])
def test_a_broken_file_is_refused_with_its_line(text: str, error: str) -> None:
    with pytest.raises(QueryError, match=re.escape(error)):
        parse(text, "x.sql")


def test_a_name_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: one\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: one\nSELECT 2;\n")
    with pytest.raises(QueryError, match=re.escape("b.sql: the query 'one' is also named in a.sql")):
        load(tmp_path)


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(QueryError, match="no query named 'no_such_query'"):
        sql("no_such_query")
