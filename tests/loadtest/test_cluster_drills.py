"""The cluster's benchmark and drills, short: each part runs end to end against real processes (``tokex cluster``,
``tokex engine``, an embedded NATS and PostgreSQL), and the checks the long runs make hold. The several-hosts drill
needs root and network namespaces; elsewhere it is skipped with the reason."""

import pytest

from loadtest import bench_cluster
from loadtest.bench_cluster import capacity
from loadtest.chaos_cluster import ClusterChaosOptions, chaos_cluster, passed, table
from loadtest.drill import Crowd
from loadtest.hosts import drill, unavailable


def test_the_capacity_table_adds_gateways_until_the_engine_is_full():
    rows = capacity({"gateway": 250.0, "engine": 50.0, "nats": 10.0, "postgres": 40.0})
    assert [row["bound"] for row in rows] == ["gateways"] * 4 + ["engine"]
    assert rows[0]["orders_per_s"] == pytest.approx(4_000)
    assert rows[-1]["orders_per_s"] == pytest.approx(20_000)  # one engine core at 50 us an order
    assert rows[-1]["engine_busy"] == pytest.approx(1.0)


@pytest.mark.slow
async def test_the_cluster_keeps_every_acknowledged_order_through_leader_gateway_and_nats_faults():
    options = ClusterChaosOptions(crowd=Crowd(sellers=2, buyers=3, watchers=4, rate=100.0), kills=1, gateway_kills=1,
                                  nats_restarts=1, spacing=1.5)
    result = await chaos_cluster(options)
    assert passed(result), table(result)
    assert sorted(d["drill"] for d in result["drills"]) == ["gateway", "leader", "nats"]
    assert result["probes"]["acknowledged"] > 0
    assert result["cluster_exit"] == 0


@pytest.mark.slow
async def test_the_cluster_benchmark_measures_every_part():
    args = bench_cluster.parse_args(["--duration", "2", "--warmup", "1", "--connections", "4", "--watchers", "8",
                                     "--submitters", "4", "--feed-watchers", "40", "--feed-rate", "20"])
    results = await bench_cluster.main(args)
    for layout in ("one_process", "cluster"):
        assert results[layout]["orders_per_s"] > 0 and not results[layout]["errors"], results[layout]
    assert {"gateway", "engine", "nats", "postgres"} <= set(results["cluster"]["cpu_us_per_order"])
    assert results["engine_via_nats"]["commands_per_s"] > 0
    assert results["feed"]["frames"] > 0 and results["feed"]["gaps"] == 0 and results["feed"]["bad"] == 0


@pytest.mark.slow
async def test_the_cluster_runs_across_network_namespaces():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    options = ClusterChaosOptions(crowd=Crowd(sellers=2, buyers=2, watchers=0, rate=60.0), kills=1, gateway_kills=0,
                                  nats_restarts=0, spacing=1.5)
    result = await drill(options)
    assert passed(result), table(result)
