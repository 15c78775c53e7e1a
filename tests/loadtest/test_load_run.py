"""A short load run, as ``make loadtest`` does a long one: a real ``tokex serve`` in a subprocess on a new
database, sellers and buyers over signed HTTP, watchers checking every feed message, then ``tokex check`` and
every acknowledged order looked up in the database.
"""

from pathlib import Path

import pytest

from loadtest import report
from loadtest.run import Options, run

pytestmark = pytest.mark.slow  # the load run


async def test_a_short_load_run_acknowledges_orders_without_errors_or_gaps(fresh_database_url: str,
                                                                          tmp_path: Path) -> None:
    options = Options(sellers=2, buyers=3, watchers=6, duration=2.0, warmup=1.0, rate=300.0, instruments=2,
                      database_url=fresh_database_url)
    result = await run(options)

    assert result["orders"] > 100, result
    assert result["errors"] == {}
    assert set(result["refusals"]) <= {"unknown_order", "would_take"}
    watchers = result["watchers"]
    assert watchers["gaps"] == 0 and watchers["bad"] == 0 and watchers["cut_off"] == {}
    assert watchers["messages"] > 0 and watchers["errors"] == {}
    assert result["check"]["status"] == 0, result["check"]["output"]
    assert result["durability"] == []
    assert result["requests"].keys() >= {"offer", "bid", "cancel", "market_buy"}
    assert "acknowledged orders/s" in report.table(result)
    assert (tmp_path / "result.json") in report.write(result, tmp_path)
