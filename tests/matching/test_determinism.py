"""The same commands give the same bytes: across fresh books, and across a rebuild from resting orders."""

import random
from collections.abc import Callable, Iterator

import msgspec
import pytest

from matching.book import OrderBook
from matching.types import BUY, FOK, GTC, IOC, SELL, STP_MODES

TICK = 10
SEEDS = (1, 2, 3, 20_260_101)
Command = Callable[[OrderBook], list]


def _commands(seed: int, count: int) -> Iterator[Command]:
    """A reproducible stream of commands, valid and not, from four accounts around a price of 1,000."""
    rng = random.Random(seed)
    stps = sorted(STP_MODES)
    for seq in range(1, count + 1):
        ts = 1_700_000_000_000 + seq * 7
        order_id = seq
        account = rng.randint(1, 4)
        side = rng.choice((BUY, SELL))
        ticks = rng.randint(85, 102) if side == BUY else rng.randint(98, 115)
        price = ticks * TICK + (rng.random() < 0.03)  # sometimes off the tick
        qty = rng.randint(1, 20)
        stp = rng.choice(stps)
        kind = rng.random()
        earlier = rng.randint(max(1, seq - 40), seq)  # live, filled, cancelled or never rested
        if kind < 0.45:
            tif = rng.choice((GTC, GTC, GTC, IOC, FOK))
            post_only = tif == GTC and rng.random() < 0.2
            yield lambda b, a=(seq, ts, order_id, account, side, price, qty, tif, post_only, stp): b.limit(*a)
        elif kind < 0.55:
            yield lambda b, a=(seq, ts, order_id, account, side, qty * 2, stp): b.market(*a)
        elif kind < 0.6:
            yield lambda b, a=(seq, ts, order_id, account, qty * 1_000, stp): b.buy_with_budget(*a)
        elif kind < 0.8:
            yield lambda b, a=(seq, ts, earlier): b.cancel(*a)
        else:
            new_price = price if rng.random() < 0.6 else None
            new_qty = qty if new_price is None or rng.random() < 0.4 else None
            yield lambda b, a=(seq, ts, earlier, new_price, new_qty): b.amend(*a)


def _run(book: OrderBook, commands: list[Command]) -> bytes:
    """Apply ``commands`` in turn; their events as JSON, each tagged with its type name."""
    return msgspec.json.encode([[(type(e).__name__, e) for e in command(book)] for command in commands])


@pytest.mark.parametrize("seed", SEEDS)
def test_same_commands_give_byte_identical_events(seed: int) -> None:
    commands = list(_commands(seed, 3_000))
    first, second = OrderBook(TICK), OrderBook(TICK)
    encoded = _run(first, commands)
    assert _run(second, commands) == encoded
    assert msgspec.json.encode(first.resting_orders()) == msgspec.json.encode(second.resting_orders())
    assert encoded.count(b'"Trade"') > 100
    first.check()


@pytest.mark.parametrize("seed", SEEDS)
def test_rebuild_then_continue_equals_continue(seed: int) -> None:
    commands = list(_commands(seed, 3_000))
    original = OrderBook(TICK)
    _run(original, commands[:1_500])
    rebuilt = OrderBook.rebuild(TICK, original.resting_orders())
    assert rebuilt.resting_orders() == original.resting_orders()
    assert _run(rebuilt, commands[1_500:]) == _run(original, commands[1_500:])
    assert msgspec.json.encode(rebuilt.resting_orders()) == msgspec.json.encode(original.resting_orders())
    rebuilt.check()


def test_different_seeds_give_different_streams() -> None:
    first, second = OrderBook(TICK), OrderBook(TICK)
    assert _run(first, list(_commands(1, 300))) != _run(second, list(_commands(2, 300)))
