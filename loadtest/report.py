"""What a load run measured: per-second records while it runs, then JSON, a plain table and a chart.

The ``Recorder`` keeps, per second of the measured window, the acknowledged orders and their latencies (from
writing a request to reading its whole answer) and the feed latency of every frame (from the oldest message's
``ts``, the time of its command, to receipt). Seconds are what the chart shows, so a stall is visible as a dip in
throughput and a spike in latency where it happened.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def percentile(ordered: list[float], p: float) -> float:
    """The p-quantile of an ascending list (nearest rank); NaN when empty."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Recorder:
    """Outcomes of requests and feed frames, bucketed by second of the measured window."""

    def __init__(self, clock) -> None:
        self.clock = clock
        """Seconds (monotonic), for the buckets of acknowledgements."""
        self.started: float | None = None
        self.started_us = 0
        self.latencies: dict[int, list[float]] = defaultdict(list)
        self.orders: Counter[int] = Counter()
        self.feed: dict[int, list[int]] = defaultdict(list)
        self.kinds: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.placed: list[tuple[int, str, int]] = []
        """(order id, status, filled lots) of every order answered as placed, warm-up included."""
        self.cancelled: list[int] = []
        """Orders answered as cancelled."""
        self.last_ack = 0.0
        """When the latest order was acknowledged (``clock``): the fault drills wait for it to move."""

    def start(self, now_us: int) -> None:
        """Begin the measured window (what came before is warm-up and is not kept)."""
        self.started = self.clock()
        self.started_us = now_us

    def second(self) -> int | None:
        return None if self.started is None else int(self.clock() - self.started)

    def ack(self, kind: str, latency: float, is_order: bool, refused: str | None = None) -> None:
        if is_order:
            self.last_ack = self.clock()
        second = self.second()
        if second is None:
            return
        self.kinds[kind] += 1
        if refused:
            self.refusals[refused] += 1
        if is_order:
            self.orders[second] += 1
            self.latencies[second].append(latency)

    def error(self, kind: str, code: str) -> None:
        if self.started is not None:
            self.errors[f"{kind}: {code}"] += 1

    def frame_latency(self, received_us: int, latency_us: int) -> None:
        if self.started is not None and received_us >= self.started_us:
            self.feed[(received_us - self.started_us) // 1_000_000].append(latency_us)


def summarize(recorder: Recorder, seconds: float) -> dict[str, Any]:
    """Totals and percentiles over the window, and one row per second."""
    every = sorted(latency for values in recorder.latencies.values() for latency in values)
    feed = sorted(latency for values in recorder.feed.values() for latency in values)
    rows = []
    for second in range(int(seconds)):
        acks = sorted(recorder.latencies.get(second, ()))
        frames = sorted(recorder.feed.get(second, ()))
        rows.append({"second": second, "orders": recorder.orders.get(second, 0),
                     "p50_ms": round(1000 * percentile(acks, 0.5), 2),
                     "p99_ms": round(1000 * percentile(acks, 0.99), 2),
                     "max_ms": round(1000 * acks[-1], 2) if acks else math.nan,
                     "feed_p99_ms": round(percentile(frames, 0.99) / 1000, 2)})
    return {
        "seconds": round(seconds, 2),
        "orders": len(every),
        "orders_per_s": round(len(every) / seconds, 1) if seconds else 0.0,
        "ack_ms": {name: round(1000 * percentile(every, p), 2) for name, p in
                   (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
        "feed_ms": {name: round(percentile(feed, p) / 1000, 2) for name, p in
                    (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
        "requests": dict(recorder.kinds.most_common()),
        "refusals": dict(recorder.refusals.most_common()),
        "errors": dict(recorder.errors.most_common()),
        "per_second": rows,
    }


def table(result: dict[str, Any]) -> str:
    """The plain summary: one line per figure, the target beside it where there is one."""
    ack, feed, watch = result["ack_ms"], result["feed_ms"], result["watchers"]
    target = result["target"]
    lines = [
        f"{'figure':<34} {'measured':>18}  target",
        f"{'acknowledged orders/s':<34} {result['orders_per_s']:>18,.0f}  >= {target['orders_per_s']:,}",
        f"{'ack latency p50 / p95 (ms)':<34} {ack['p50']:>8.2f} / {ack['p95']:<7.2f}",
        f"{'ack latency p99 (ms)':<34} {ack['p99']:>18.2f}  <= {target['p99_ms']:g}",
        f"{'ack latency max (ms)':<34} {ack['max']:>18.2f}",
        f"{'feed latency p50 / p95 (ms)':<34} {feed['p50']:>8.2f} / {feed['p95']:<7.2f}",
        f"{'feed latency p99 / max (ms)':<34} {feed['p99']:>8.2f} / {feed['max']:<7.2f}",
        f"{'errors':<34} {sum(result['errors'].values()):>18,}  0",
        f"{'intended rejections':<34} {sum(result['refusals'].values()):>18,}",
        f"{'feed gaps (healthy watchers)':<34} {watch['gaps']:>18,}  0",
        f"{'feed bad messages':<34} {watch['bad']:>18,}  0",
        f"{'level2 updates left unverified':<34} {watch['unverified']:>18,}",
        f"{'watcher resyncs / cut off':<34} {watch['resyncs']:>8,} / {sum(watch['cut_off'].values()):<7,}",
        f"{'feed messages / frames':<34} {watch['messages']:>8,} / {watch['frames']:<,}",
        f"{'tokex check':<34} {result['check']['verdict']:>18}  all invariants hold",
        f"{'answers contradicted by the database':<34} {len(result['durability']):>18,}  0",
    ]
    for name, counts in (("errors", result["errors"]), ("refusals", result["refusals"]),
                         ("feed errors", watch["errors"])):
        if counts:
            lines.append(f"{name}: " + ", ".join(f"{code} {n:,}" for code, n in counts.items()))
    lines += result["durability"][:10]
    lines.append("requests: " + ", ".join(f"{kind} {n:,}" for kind, n in result["requests"].items()))
    lines.append(f"target {'met' if target['met'] else 'MISSED'}")
    return "\n".join(lines)


def write(result: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``result.json`` and, when matplotlib is installed, ``result.png``; return what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "result.json"]
    written[0].write_text(json.dumps(result, indent=2) + "\n")
    chart = folder / "result.png"
    if plot(result, chart):
        written.append(chart)
    return written


def plot(result: dict[str, Any], path: Path) -> bool:
    """Throughput and latency per second, one above the other; False without matplotlib (the loadtest extra)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = result["per_second"]
    seconds = [row["second"] for row in rows]
    figure, (top, bottom) = pyplot.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(seconds, [row["orders"] for row in rows], label="acknowledged orders/s")
    top.axhline(result["target"]["orders_per_s"], color="grey", linestyle="--", label="target")
    top.set_ylabel("orders/s")
    top.legend(loc="lower right")
    for key, label in (("p50_ms", "ack p50"), ("p99_ms", "ack p99"), ("max_ms", "ack max"),
                       ("feed_p99_ms", "feed p99")):
        bottom.plot(seconds, [row[key] for row in rows], label=label)
    bottom.axhline(result["target"]["p99_ms"], color="grey", linestyle="--", label="p99 target")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("second of the run")
    bottom.legend(loc="upper right")
    figure.suptitle(result["title"])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True
