"""The batch statement's arguments: array literals PostgreSQL reads back as the values they were made from, and
the one instant of a batch."""

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.engine import Effects
from exchange.store import Write, array_literal
from tests.support.sync import run_sync

# What a client may put in a text column: anything but NUL (PostgreSQL refuses it, and the engine rejects it
# first) and lone surrogates (not encodable). Array syntax, backslashes, quotes and "null" are all fair game.
TEXTS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
TRICKY = st.sampled_from(["", "null", "NULL", '"', "\\", "\\n", "{}", "a,b", " padded ", "é", "\n", "\\u00e9"])
BIGINTS = st.integers(-(2**63), 2**63 - 1)
INSTANTS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC))


async def read_back(dsn: str, literal: str, kind: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(f"SELECT $1::text::{kind}[]", literal)
    finally:
        await conn.close()


def round_trip(dsn: str, values: list, kind: str) -> list:
    return run_sync(lambda: read_back(dsn, array_literal(values), kind))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXTS, TRICKY), max_size=8))
def test_text_survives_the_literal(database_url: str, values: list[str | None]) -> None:
    assert round_trip(database_url, values, "text") == values


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), BIGINTS), max_size=8))
def test_bigints_survive_the_literal(database_url: str, values: list[int | None]) -> None:
    assert round_trip(database_url, values, "bigint") == values


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans()), max_size=8))
def test_booleans_survive_the_literal(database_url: str, values: list[bool | None]) -> None:
    assert round_trip(database_url, values, "boolean") == values


@settings(max_examples=30, deadline=None)
@given(st.lists(INSTANTS, max_size=8))
def test_instants_survive_the_literal(database_url: str, values: list[datetime]) -> None:
    assert round_trip(database_url, values, "timestamptz") == values


def test_an_empty_column_is_an_empty_array(database_url: str) -> None:
    assert round_trip(database_url, [], "bigint") == []


def test_a_batch_is_written_at_its_one_instant() -> None:
    at = datetime(2026, 11, 28, tzinfo=UTC)
    effects = Effects(entries=[(1, "deposit", None, None, at), (2, "deposit", None, None, at)],
                      fills=[(1, 1, 1, 100, 1, 10, 11, 100, 101, "buy", 0, 0, at)])
    assert Write(effects).arguments[0] == at
    assert Write(Effects()).arguments[0] is None


def test_rows_of_two_instants_are_refused_as_one_batch() -> None:
    at = datetime(2026, 11, 28, tzinfo=UTC)
    effects = Effects(entries=[(1, "deposit", None, None, at), (2, "deposit", None, None, at + timedelta(1))])
    with pytest.raises(ValueError, match="one instant"):
        Write(effects)
