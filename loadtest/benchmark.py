"""What the service benchmarks (``bench_exchange``, ``bench_api``) share: the options every one of them takes, what
every run counts, and the line that sums up the runs against the targets."""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadtest.report import percentile


@dataclass
class Run:
    """What one run of any benchmark counts over its measured window; each benchmark adds its own."""

    acked: int = 0
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending each acknowledged request to its answer."""
    kinds: Counter[str] = field(default_factory=Counter)
    """Requests sent, by kind."""
    seconds: float = 0.0
    batches: int = 0
    """Group commits."""

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        """The p-quantile of the latencies in milliseconds; NaN when there are none."""
        return 1000 * percentile(sorted(self.latencies), p)


def parser(doc: str, duration: float, clients: str) -> argparse.ArgumentParser:
    """The common options: ``--runs`` runs of ``--duration`` measured seconds after ``--warmup``, with ``clients``
    (an option's name) sending at once."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=duration, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(clients, type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    return parser


def print_medians(runs: Sequence[Run], target_rate: int, target_p99_ms: float) -> tuple[float, float]:
    """Print the median rate and latencies over ``runs`` beside the targets; return the rate and the p99 (ms)."""
    rate = statistics.median(run.rate for run in runs)
    p50 = statistics.median(run.percentile_ms(0.50) for run in runs)
    p99 = statistics.median(run.percentile_ms(0.99) for run in runs)
    worst = statistics.median(1000 * max(run.latencies, default=0) for run in runs)
    print(f"\nmedian of {len(runs)}: {rate:,.0f} acknowledged orders/s (target >= {target_rate:,}), "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target <= {target_p99_ms:g}), max {worst:.1f} ms")
    return rate, p99
