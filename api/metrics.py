"""Prometheus metrics of a running server, served at ``GET /metrics`` in the text exposition format.

- ``tokex_commands_total{command, result}``, counter: committed commands by type (``place_order`` are the
  orders, ``route_order`` the routed ones) and result, ``ok`` or the rejection's code.
- ``tokex_commands_refused_total``, counter: commands answered 503, the exchange could not commit them.
- ``tokex_batch_commands``, histogram: commands per committed batch.
- ``tokex_batch_commit_seconds``, histogram: the database write of one batch.
- ``tokex_sequencer_queue_depth``, gauge: commands waiting to be applied.
- ``tokex_feed_connections`` and ``tokex_feed_subscriptions``, gauges: open connections to ``/v1/ws`` and their
  subscriptions; ``tokex_feed_slow_consumer_closes_total``, counter: connections closed with 1013.
- ``tokex_rate_limit_refusals_total{limit}``, counter: 429 answers, by ``key`` or ``address``.
- ``tokex_db_pool_connections{state}``, gauge: the asyncpg pool's ``open`` and ``idle`` connections, its ``max``.

Cost: the sequencer hands each committed batch to ``Metrics.committed`` once; the two histograms are observed per
batch and the commands are counted in a plain dict, a dict increment per command. Everything else is read when
Prometheus scrapes (``collect``), from counts the server keeps anyway; nothing else on the hot path changes.
Each app has a registry of its own, so several servers in one process (as in the tests) do not share figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from exchange.commands import Rejection
from exchange.sequencer import Batch

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
COMMIT_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics(Collector):
    """The registry of one app; ``app.state.metrics``. ``watch`` connects it to the running server's parts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_commands = Histogram("tokex_batch_commands", "Commands per committed batch.",
                                        buckets=BATCH_SIZES, registry=self.registry)
        self.commit_seconds = Histogram("tokex_batch_commit_seconds", "Seconds to write one batch to the database.",
                                        buckets=COMMIT_SECONDS, registry=self.registry)
        self.commands: Counter[tuple[str, str]] = Counter()
        self.services = None
        self.hub = None
        self.registry.register(self)

    def watch(self, services, hub) -> None:
        """Read figures from ``services`` (``api.services.Services``) and the feed's ``hub`` from now on."""
        self.services = services
        self.hub = hub
        services.sequencer.on_commit = self.committed

    def committed(self, batch: Batch, results: list, seconds: float) -> None:
        """The sequencer's ``on_commit``: one committed batch."""
        self.batch_commands.observe(len(batch))
        self.commit_seconds.observe(seconds)
        commands = self.commands
        for (command, _, _, _), result in zip(batch, results, strict=True):
            commands[command.__struct_config__.tag, result.code if type(result) is Rejection else "ok"] += 1

    def collect(self) -> Iterator[Metric]:
        commands = CounterMetricFamily("tokex_commands", "Committed commands by type and result.",
                                       labels=["command", "result"])
        for (command, result), count in sorted(self.commands.items()):
            commands.add_metric([command, result], count)
        yield commands
        services, hub = self.services, self.hub
        if services is None or hub is None:
            return
        yield CounterMetricFamily("tokex_commands_refused", "Commands answered 503: the exchange could not commit.",
                                  value=services.sequencer.refused)
        yield GaugeMetricFamily("tokex_sequencer_queue_depth", "Commands waiting to be applied.",
                                value=services.sequencer.queue_depth)
        yield GaugeMetricFamily("tokex_feed_connections", "Open feed connections.", value=len(hub.connections))
        yield GaugeMetricFamily("tokex_feed_subscriptions", "Feed subscriptions over all connections.",
                                value=sum(len(connection.feeds) for connection in hub.connections))
        yield CounterMetricFamily("tokex_feed_slow_consumer_closes", "Feed connections closed as slow consumers.",
                                  value=hub.stats["slow_consumer_closes"])
        refusals = CounterMetricFamily("tokex_rate_limit_refusals", "Requests refused by a rate limit.",
                                       labels=["limit"])
        for limiter in (services.key_limiter, services.address_limiter):
            refusals.add_metric([limiter.name], limiter.refusals)
        yield refusals
        pool = services.pool
        connections = GaugeMetricFamily("tokex_db_pool_connections", "The database pool's connections.",
                                        labels=["state"])
        connections.add_metric(["open"], pool.get_size())
        connections.add_metric(["idle"], pool.get_idle_size())
        connections.add_metric(["max"], pool.get_max_size())
        yield connections


async def endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format."""
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
