"""Matching engine benchmark: replay seeded workloads through one OrderBook and print the figures.

Each workload is generated before timing starts (the generator drives a scratch book to know what is live),
then replayed on a fresh book as a list of pre-bound calls, so the timed loop is the book and nothing else.
Every figure is the median of ``--runs`` runs.

- W1: 200,000 non-crossing limit orders.
- W2: 500,000 mixed commands: ~55% new limits (half near the touch, ~10% of those crossing; half up to 1,000
  ticks deep), ~35% cancels of live orders, ~10% aggressive orders (most take part of the best level, a few
  sweep 2-5 levels), holding about 1,000 live orders over about 600 levels.
- W3: 10 rounds of 50,000 resting orders over 1,000 levels, then large orders sweeping 20-100 levels each;
  maker fills per second of the sweeping phase.
- Memory: traced bytes per resting order with 1,000,000 resting orders.

Usage: ``python -m loadtest.bench_matching [--runs 3] [--only w1,w2,w3,mem]``
"""

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

import matching.book
from matching.book import OrderBook
from matching.events import Trade
from matching.types import BUY, IOC, SELL

TICK = 10_000  # 0.01 CNY per lot
MID = 2_000 * TICK  # 20.00 CNY per lot
TARGETS = {"w2": 1_000_000, "w3": 1_500_000, "mem": 300}

Call = tuple[Callable, tuple]

# The install compiles the book where it can and falls back to plain Python (README): say which one ran.
BUILD = "pure Python" if matching.book.__file__.endswith(".py") else "compiled"


def w1_commands(book: OrderBook, n: int = 200_000, seed: int = 1) -> list[Call]:
    rng = random.Random(seed)
    calls = []
    for i in range(1, n + 1):
        if rng.random() < 0.5:
            args = (i, i, i, rng.randrange(100), BUY, MID - rng.randint(1, 1000) * TICK, rng.randint(1, 500))
        else:
            args = (i, i, i, rng.randrange(100), SELL, MID + rng.randint(1, 1000) * TICK, rng.randint(1, 500))
        calls.append((book.limit, args))
    return calls


def w2_commands(book: OrderBook, n: int = 500_000, seed: int = 2) -> tuple[list[Call], dict[str, int]]:
    """Generate W2 against a scratch book, then bind the same arguments to ``book``."""
    rng = random.Random(seed)
    scratch = OrderBook(TICK)
    live: list[int] = []  # ids of orders that may still rest; filled ones are pruned lazily
    where: dict[int, int] = {}
    script: list[tuple[str, tuple]] = []
    mix = {"limit": 0, "crossing_limit": 0, "cancel": 0, "aggressive": 0, "sweep": 0}
    levels_seen = []
    next_id = 1

    def drop_dead() -> None:
        while live and scratch.order(live[-1]) is None:
            where.pop(live.pop(), None)

    seq = 0
    while len(script) < n:
        seq += 1
        bid = scratch.best_bid()
        ask = scratch.best_ask()
        bid_px = bid[0] if bid else MID - TICK
        ask_px = ask[0] if ask else MID + TICK
        count = scratch.open_order_count
        roll = rng.random()
        if count > 1_100:
            roll = 0.6  # too many live orders: cancel
        elif count < 900:
            roll = 0.0  # too few: add
        if roll < 0.55:
            side = BUY if rng.random() < 0.5 else SELL
            if rng.random() < 0.5:  # near the touch
                if rng.random() < 0.10:
                    price = ask_px if side == BUY else bid_px
                    mix["crossing_limit"] += 1
                else:
                    offset = rng.randint(0, 5) * TICK
                    price = bid_px - offset if side == BUY else ask_px + offset
                    mix["limit"] += 1
            else:
                offset = rng.randint(1, 1000) * TICK
                price = bid_px - offset if side == BUY else ask_px + offset
                mix["limit"] += 1
            price = max(price, TICK)
            oid = next_id
            next_id += 1
            args = (seq, seq, oid, rng.randrange(50), side, price, rng.randint(1, 500))
            script.append(("limit", args))
            scratch.limit(*args)
            where[oid] = len(live)
            live.append(oid)
        elif roll < 0.90:
            drop_dead()
            if not live:
                continue
            k = rng.randrange(len(live))
            oid = live[k]
            live[k] = live[-1]
            live.pop()
            if scratch.order(oid) is None:
                continue
            script.append(("cancel", (seq, seq, oid)))
            scratch.cancel(seq, seq, oid)
            mix["cancel"] += 1
        else:
            side = BUY if rng.random() < 0.5 else SELL
            bids, asks = scratch.depth(6)
            opposite = asks if side == BUY else bids
            if not opposite:
                continue
            oid = next_id
            next_id += 1
            if rng.random() < 0.85:  # take part of the best level
                qty = max(1, opposite[0][1] // 2)
                args = (seq, seq, oid, rng.randrange(50), side, qty)
                script.append(("market", args))
                scratch.market(*args)
                mix["aggressive"] += 1
            else:  # sweep 2-5 levels
                depth = min(len(opposite), rng.randint(2, 5))
                qty = sum(total for _, total in opposite[:depth - 1]) + max(1, opposite[depth - 1][1] // 2)
                args = (seq, seq, oid, rng.randrange(50), side, opposite[depth - 1][0], qty, IOC)
                script.append(("limit", args))
                scratch.limit(*args)
                mix["sweep"] += 1
        if seq % 1000 == 0:
            bids, asks = scratch.depth(100_000)
            levels_seen.append(len(bids) + len(asks))
    mix["mean_levels"] = round(statistics.mean(levels_seen))
    mix["mean_live_orders"] = count
    methods = {"limit": book.limit, "cancel": book.cancel, "market": book.market}
    return [(methods[name], args) for name, args in script], mix


def w3_rounds(book: OrderBook, rounds: int = 10, seed: int = 3) -> list[tuple[list[Call], list[Call]]]:
    """Per round: the resting calls (untimed) and the sweeping calls (timed)."""
    rng = random.Random(seed)
    out = []
    next_id = 1
    seq = 0
    for _ in range(rounds):
        rest, sweep = [], []
        per_level = [0] * 1000
        for _ in range(50_000):
            level = rng.randrange(1000)
            qty = rng.randint(1, 100)
            per_level[level] += qty
            seq += 1
            rest.append((book.limit, (seq, seq, next_id, rng.randrange(1000), SELL, MID + level * TICK, qty)))
            next_id += 1
        start = 0
        while start < 1000:
            stop = min(1000, start + rng.randint(20, 100))
            filled = [lv for lv in range(start, stop) if per_level[lv]]
            if filled:
                seq += 1
                qty = sum(per_level[lv] for lv in filled)
                sweep.append((book.limit, (seq, seq, next_id, 1_000_000, BUY, MID + (stop - 1) * TICK, qty, IOC)))
                next_id += 1
            start = stop
        out.append((rest, sweep))
    return out


def replay(calls: list[Call]) -> float:
    gc.collect()
    start = time.perf_counter()
    for method, args in calls:
        method(*args)
    return time.perf_counter() - start


def run_w1() -> float:
    book = OrderBook(TICK)
    calls = w1_commands(book)
    return len(calls) / replay(calls)


def run_w2() -> tuple[float, dict[str, int]]:
    book = OrderBook(TICK)
    calls, mix = w2_commands(book)
    rate = len(calls) / replay(calls)
    book.check()
    return rate, mix


def run_w3() -> float:
    book = OrderBook(TICK)
    fills = 0
    elapsed = 0.0
    for rest, sweep in w3_rounds(book):
        replay(rest)
        gc.collect()
        # Each sweep is timed on its own and its events are counted and dropped before the next, as a caller
        # consuming them would; holding a round's events (megabytes of them) would time page faults instead.
        for method, args in sweep:
            start = time.perf_counter()
            events = method(*args)
            elapsed += time.perf_counter() - start
            fills += sum(type(event) is Trade for event in events)
        book.check()
        if book.open_order_count:
            raise AssertionError("W3 sweep left resting orders behind")
    return fills / elapsed


def run_memory(n: int = 1_000_000) -> float:
    """Traced bytes per resting order; ids are made in the loop so only the book keeps them."""
    rng = random.Random(4)
    prices = [rng.randint(1, 1000) for _ in range(n)]
    qtys = [rng.randint(1, 500) for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = OrderBook(TICK)
    limit = book.limit
    base = 10**12
    for i in range(n):
        limit(0, 0, base + i, i % 100, SELL, MID + prices[i] * TICK, qtys[i])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if book.open_order_count != n:
        raise AssertionError("memory workload did not rest every order")
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="w1,w2,w3,mem")
    opts = parser.parse_args()
    wanted = set(opts.only.split(","))
    print(f"Order book: {BUILD}")
    rows = []
    if "w1" in wanted:
        rows.append(("W1 non-crossing limits", "events/s", statistics.median(run_w1() for _ in range(opts.runs)), None))
    if "w2" in wanted:
        results = [run_w2() for _ in range(opts.runs)]
        mix = results[0][1]
        print("W2 mix:", ", ".join(f"{k}={v}" for k, v in mix.items()))
        rows.append(("W2 mixed flow", "events/s", statistics.median(r for r, _ in results), TARGETS["w2"]))
    if "w3" in wanted:
        rows.append(("W3 sweeps", "maker fills/s", statistics.median(run_w3() for _ in range(opts.runs)),
                     TARGETS["w3"]))
    if "mem" in wanted:
        rows.append(("Memory at 1M resting", "bytes/order", statistics.median(run_memory() for _ in range(opts.runs)),
                     -TARGETS["mem"]))
    print(f"{'workload':<24} {'median of ' + str(opts.runs):>16} {'unit':<14} target")
    for name, unit, value, target in rows:
        if target is None:
            verdict = "-"
        elif target < 0:
            verdict = f"<= {-target:,} {'ok' if value <= -target else 'MISSED'}"
        else:
            verdict = f">= {target:,} {'ok' if value >= target else 'MISSED'}"
        print(f"{name:<24} {value:>16,.0f} {unit:<14} {verdict}")


if __name__ == "__main__":
    main()
