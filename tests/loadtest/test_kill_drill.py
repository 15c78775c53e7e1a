"""One fault drill, as ``make chaos`` does several: under load, the server is SIGKILLed and restarted on its
port; clients get errors while it is down, never a false success; the watchers reconnect and resubscribe by
themselves; afterwards ``tokex check`` passes and every acknowledged order is in the database as answered. Then
the restart with open orders, with a small book.
"""

import pytest

from loadtest.chaos import ChaosOptions, chaos, chaos_passed
from loadtest.drill import Crowd

pytestmark = pytest.mark.slow  # a drill


async def test_the_server_killed_under_load_recovers_with_everything_acknowledged(fresh_database_url: str) -> None:
    options = ChaosOptions(crowd=Crowd(sellers=2, buyers=3, watchers=4, rate=200.0), kills=1, outages=0, spacing=1.5,
                           open_orders=500, database_url=fresh_database_url)
    result = await chaos(options)

    kill, reopened = result["drills"]
    assert kill["drill"] == "kill" and kill["errors_meanwhile"] > 0
    assert kill["recovery_s"] < 30 and kill["watchers_back_s"] is not None
    assert result["watchers"]["resyncs"] >= options.crowd.watchers
    assert reopened["first_order"] == "201 open"
    assert reopened["rebuilt_open_orders"] == options.open_orders + 1
    assert result["check"]["status"] == 0, result["check"]["output"]
    assert result["durability"] == []
    assert result["server_exit"] == 0
    assert chaos_passed(result)
