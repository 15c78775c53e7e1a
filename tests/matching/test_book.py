"""The order book by example: one command in, then the events and the book asserted."""

import pytest

from matching import types
from matching.book import OrderBook
from matching.events import Accepted, Amended, Cancelled, Decremented, LevelChanged, Rejected, Trade
from matching.level import COMPACT_SLACK
from matching.types import (
    BUY,
    BY_REQUEST,
    CANCEL_BOTH,
    CANCEL_NEWEST,
    CANCEL_OLDEST,
    DECREMENT,
    EXPIRED,
    FILL_OR_KILL,
    FOK,
    IOC,
    SELF_TRADE,
    SELL,
)

TICK = 10
S = 41  # the seq and ts of the command under test; setup commands use 0
T = 1_700_000_000_123


def _book(*orders: tuple) -> OrderBook:
    """A book holding ``orders``, each ``(order_id, account, side, price, qty, **options)``, rested in turn."""
    book = OrderBook(TICK)
    for order_id, account, side, price, qty, *options in orders:
        events = book.limit(0, 0, order_id, account, side, price, qty, **(options[0] if options else {}))
        assert type(events[-1]) is LevelChanged, f"setup order {order_id} did not rest: {events}"
    return book


def _ids(book: OrderBook, side: str, price: int) -> list[int]:
    return [o.order_id for o in book.orders_at(side, price)]


def _trade(price, qty, maker, maker_account, taker, taker_account, taker_side, maker_remaining) -> Trade:
    return Trade(S, T, price=price, qty=qty, maker_order_id=maker, maker_account=maker_account,
                 taker_order_id=taker, taker_account=taker_account, taker_side=taker_side,
                 maker_remaining=maker_remaining)


# Matching, by example: a book, one command, then its events and what rests after.

EXAMPLES = {
    # Limit orders.
    "limit that does not cross rests behind its level": (
        [(1, 7, SELL, 100, 5)], lambda b: b.limit(S, T, 2, 8, SELL, 100, 3),
        [Accepted(S, T, 2, 8, SELL, 100, 3), LevelChanged(S, T, SELL, 100, 8)],
        [(SELL, 100, 1, 5), (SELL, 100, 2, 3)]),
    "limit that crosses trades at the makers price and rests the rest": (
        [(1, 7, SELL, 100, 5)], lambda b: b.limit(S, T, 2, 8, BUY, 120, 8),
        [Accepted(S, T, 2, 8, BUY, 120, 8), _trade(100, 5, 1, 7, 2, 8, BUY, 0), LevelChanged(S, T, SELL, 100, 0),
         LevelChanged(S, T, BUY, 120, 3)],
        [(BUY, 120, 2, 3)]),
    "sell limit below the bid trades at the bid": (
        [(1, 7, BUY, 100, 2)], lambda b: b.limit(S, T, 2, 8, SELL, 80, 1),
        [Accepted(S, T, 2, 8, SELL, 80, 1), _trade(100, 1, 1, 7, 2, 8, SELL, 1), LevelChanged(S, T, BUY, 100, 1)],
        [(BUY, 100, 1, 1)]),
    "ioc fills what it can and expires the rest": (
        [(1, 7, SELL, 100, 2), (2, 7, SELL, 120, 4)], lambda b: b.limit(S, T, 3, 8, BUY, 110, 5, tif=IOC),
        [Accepted(S, T, 3, 8, BUY, 110, 5), _trade(100, 2, 1, 7, 3, 8, BUY, 0), LevelChanged(S, T, SELL, 100, 0),
         Cancelled(S, T, 3, 8, 3, EXPIRED)],
        [(SELL, 120, 2, 4)]),
    "fok that can fill trades its whole qty": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 110, 3)], lambda b: b.limit(S, T, 3, 8, BUY, 110, 5, tif=FOK),
        [Accepted(S, T, 3, 8, BUY, 110, 5), _trade(100, 2, 1, 7, 3, 8, BUY, 0), LevelChanged(S, T, SELL, 100, 0),
         _trade(110, 3, 2, 6, 3, 8, BUY, 0), LevelChanged(S, T, SELL, 110, 0)],
        []),
    # Market orders.
    "market buy walks the asks and expires the rest": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 110, 1)], lambda b: b.market(S, T, 3, 8, BUY, 5),
        [Accepted(S, T, 3, 8, BUY, None, 5), _trade(100, 2, 1, 7, 3, 8, BUY, 0), LevelChanged(S, T, SELL, 100, 0),
         _trade(110, 1, 2, 6, 3, 8, BUY, 0), LevelChanged(S, T, SELL, 110, 0), Cancelled(S, T, 3, 8, 2, EXPIRED)],
        []),
    "market sell takes the highest bids first": (
        [(1, 7, BUY, 90, 5), (2, 6, BUY, 100, 1)], lambda b: b.market(S, T, 3, 8, SELL, 3),
        [Accepted(S, T, 3, 8, SELL, None, 3), _trade(100, 1, 2, 6, 3, 8, SELL, 0), LevelChanged(S, T, BUY, 100, 0),
         _trade(90, 2, 1, 7, 3, 8, SELL, 3), LevelChanged(S, T, BUY, 90, 3)],
        [(BUY, 90, 1, 3)]),
    # Market buys by budget.
    "budget buy spends whole lots and expires the unspent rest": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 150, 5)], lambda b: b.buy_with_budget(S, T, 3, 8, 480),
        [Accepted(S, T, 3, 8, BUY, None, None, 480), _trade(100, 2, 1, 7, 3, 8, BUY, 0),
         LevelChanged(S, T, SELL, 100, 0), _trade(150, 1, 2, 6, 3, 8, BUY, 4), LevelChanged(S, T, SELL, 150, 4),
         Cancelled(S, T, 3, 8, 0, EXPIRED)],
        [(SELL, 150, 2, 4)]),
    "budget buy stops at the first lot it cannot afford": (
        [(1, 7, SELL, 100, 1), (2, 6, SELL, 300, 5), (3, 5, SELL, 310, 5)],
        lambda b: b.buy_with_budget(S, T, 4, 8, 250),
        [Accepted(S, T, 4, 8, BUY, None, None, 250), _trade(100, 1, 1, 7, 4, 8, BUY, 0),
         LevelChanged(S, T, SELL, 100, 0), Cancelled(S, T, 4, 8, 0, EXPIRED)],
        [(SELL, 300, 2, 5), (SELL, 310, 3, 5)]),
    "budget spent exactly closes the order without a cancel": (
        [(1, 7, SELL, 100, 5)], lambda b: b.buy_with_budget(S, T, 2, 8, 300),
        [Accepted(S, T, 2, 8, BUY, None, None, 300), _trade(100, 3, 1, 7, 2, 8, BUY, 2),
         LevelChanged(S, T, SELL, 100, 2)],
        [(SELL, 100, 1, 2)]),
    # Priority.
    "orders at one price fill oldest first": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 100, 2), (3, 5, SELL, 100, 2)], lambda b: b.market(S, T, 4, 8, BUY, 3),
        [Accepted(S, T, 4, 8, BUY, None, 3), _trade(100, 2, 1, 7, 4, 8, BUY, 0), _trade(100, 1, 2, 6, 4, 8, BUY, 1),
         LevelChanged(S, T, SELL, 100, 3)],
        [(SELL, 100, 2, 1), (SELL, 100, 3, 2)]),
    "a better price fills before an older order": (
        [(1, 7, SELL, 110, 2), (2, 6, SELL, 100, 2)], lambda b: b.limit(S, T, 3, 8, BUY, 110, 3),
        [Accepted(S, T, 3, 8, BUY, 110, 3), _trade(100, 2, 2, 6, 3, 8, BUY, 0), LevelChanged(S, T, SELL, 100, 0),
         _trade(110, 1, 1, 7, 3, 8, BUY, 1), LevelChanged(S, T, SELL, 110, 1)],
        [(SELL, 110, 1, 1)]),
    # Amend.
    "amend to a new price joins the back of the new level": (
        [(1, 7, BUY, 100, 5), (2, 6, BUY, 90, 4)], lambda b: b.amend(S, T, 1, price=90),
        [Amended(S, T, 1, 90, 5, False), LevelChanged(S, T, BUY, 100, 0), LevelChanged(S, T, BUY, 90, 9)],
        [(BUY, 90, 2, 4), (BUY, 90, 1, 5)]),
    "amend of price and qty together applies both": (
        [(1, 7, SELL, 120, 5), (2, 6, SELL, 130, 4)], lambda b: b.amend(S, T, 2, price=120, qty=1),
        [Amended(S, T, 2, 120, 1, False), LevelChanged(S, T, SELL, 130, 0), LevelChanged(S, T, SELL, 120, 6)],
        [(SELL, 120, 1, 5), (SELL, 120, 2, 1)]),
    "amend to a crossing price matches like a new limit order": (
        [(1, 7, BUY, 90, 5), (2, 6, SELL, 100, 3)], lambda b: b.amend(S, T, 1, price=100),
        [Amended(S, T, 1, 100, 5, False), LevelChanged(S, T, BUY, 90, 0), _trade(100, 3, 2, 6, 1, 7, BUY, 0),
         LevelChanged(S, T, SELL, 100, 0), LevelChanged(S, T, BUY, 100, 2)],
        [(BUY, 100, 1, 2)]),
    "amend that crosses uses the orders own stp mode": (
        [(1, 7, BUY, 90, 5, {"stp": CANCEL_OLDEST}), (2, 7, SELL, 100, 3), (3, 6, SELL, 100, 1)],
        lambda b: b.amend(S, T, 1, price=100),
        [Amended(S, T, 1, 100, 5, False), LevelChanged(S, T, BUY, 90, 0), Cancelled(S, T, 2, 7, 3, SELF_TRADE),
         _trade(100, 1, 3, 6, 1, 7, BUY, 0), LevelChanged(S, T, SELL, 100, 0), LevelChanged(S, T, BUY, 100, 4)],
        [(BUY, 100, 1, 4)]),
    # Self-trade prevention.
    "stp cancel newest after a partial fill cancels only the rest": (
        [(1, 6, SELL, 100, 2), (2, 7, SELL, 100, 5)], lambda b: b.limit(S, T, 3, 7, BUY, 100, 4),
        [Accepted(S, T, 3, 7, BUY, 100, 4), _trade(100, 2, 1, 6, 3, 7, BUY, 0), Cancelled(S, T, 3, 7, 2, SELF_TRADE),
         LevelChanged(S, T, SELL, 100, 5)],
        [(SELL, 100, 2, 5)]),
    "stp cancel oldest cancels the resting order and goes on matching": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 100, 3)], lambda b: b.limit(S, T, 3, 7, BUY, 100, 3, stp=CANCEL_OLDEST),
        [Accepted(S, T, 3, 7, BUY, 100, 3), Cancelled(S, T, 1, 7, 2, SELF_TRADE), _trade(100, 3, 2, 6, 3, 7, BUY, 0),
         LevelChanged(S, T, SELL, 100, 0)],
        []),
    "stp cancel both cancels the resting and the incoming order": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 100, 3)], lambda b: b.market(S, T, 3, 7, BUY, 4, stp=CANCEL_BOTH),
        [Accepted(S, T, 3, 7, BUY, None, 4), Cancelled(S, T, 1, 7, 2, SELF_TRADE), Cancelled(S, T, 3, 7, 4, SELF_TRADE),
         LevelChanged(S, T, SELL, 100, 3)],
        [(SELL, 100, 2, 3)]),
    "stp decrement of a smaller incoming order cancels it and shrinks the resting one": (
        [(1, 7, SELL, 100, 5)], lambda b: b.limit(S, T, 2, 7, BUY, 100, 2, stp=DECREMENT),
        [Accepted(S, T, 2, 7, BUY, 100, 2), Decremented(S, T, 1, 7, 2, 3), Cancelled(S, T, 2, 7, 2, SELF_TRADE),
         LevelChanged(S, T, SELL, 100, 3)],
        [(SELL, 100, 1, 3)]),
    "stp decrement of equal orders cancels both": (
        [(1, 7, SELL, 100, 3)], lambda b: b.market(S, T, 2, 7, BUY, 3, stp=DECREMENT),
        [Accepted(S, T, 2, 7, BUY, None, 3), Cancelled(S, T, 1, 7, 3, SELF_TRADE), Cancelled(S, T, 2, 7, 3, SELF_TRADE),
         LevelChanged(S, T, SELL, 100, 0)],
        []),
    "stp decrement of a larger incoming order cancels the resting one and goes on": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 100, 2)], lambda b: b.limit(S, T, 3, 7, BUY, 100, 5, stp=DECREMENT),
        [Accepted(S, T, 3, 7, BUY, 100, 5), Cancelled(S, T, 1, 7, 2, SELF_TRADE), Decremented(S, T, 3, 7, 2, 3),
         _trade(100, 2, 2, 6, 3, 7, BUY, 0), LevelChanged(S, T, SELL, 100, 0), LevelChanged(S, T, BUY, 100, 1)],
        [(BUY, 100, 3, 1)]),
    "stp cancel newest on a budget order cancels it with no lots": (
        [(1, 6, SELL, 100, 1), (2, 7, SELL, 100, 2)], lambda b: b.buy_with_budget(S, T, 3, 7, 1000),
        [Accepted(S, T, 3, 7, BUY, None, None, 1000), _trade(100, 1, 1, 6, 3, 7, BUY, 0),
         Cancelled(S, T, 3, 7, 0, SELF_TRADE), LevelChanged(S, T, SELL, 100, 2)],
        [(SELL, 100, 2, 2)]),
    "stp never stops trades between different accounts": (
        [(1, 6, SELL, 100, 2)], lambda b: b.market(S, T, 2, 7, BUY, 2, stp=CANCEL_BOTH),
        [Accepted(S, T, 2, 7, BUY, None, 2), _trade(100, 2, 1, 6, 2, 7, BUY, 0), LevelChanged(S, T, SELL, 100, 0)],
        []),
    "fok under cancel oldest fills past its own orders": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 100, 3)],
        lambda b: b.limit(S, T, 3, 7, BUY, 100, 3, tif=FOK, stp=CANCEL_OLDEST),
        [Accepted(S, T, 3, 7, BUY, 100, 3), Cancelled(S, T, 1, 7, 2, SELF_TRADE), _trade(100, 3, 2, 6, 3, 7, BUY, 0),
         LevelChanged(S, T, SELL, 100, 0)],
        []),
}
"""One command on a book of ``(order_id, account, side, price, qty)`` orders: the events it answers, and what rests
after it, in priority order (bids best first, then asks) as ``(side, price, order_id, open qty)``."""


@pytest.mark.parametrize(("orders", "command", "events", "rests"), EXAMPLES.values(), ids=EXAMPLES.keys())
def test_a_command_answers_its_events_and_leaves_what_rests(orders, command, events, rests) -> None:
    book = _book(*orders)
    assert command(book) == events
    assert [(o.side, o.price, o.order_id, o.qty) for o in book.resting_orders()] == rests
    book.check()


# More limit orders, and what every command's events carry


def test_post_only_that_does_not_cross_rests_as_post_only() -> None:
    book = _book((1, 7, SELL, 100, 2))
    events = book.limit(S, T, 2, 8, BUY, 90, 4, post_only=True)
    assert events == [Accepted(S, T, 2, 8, BUY, 90, 4), LevelChanged(S, T, BUY, 90, 4)]
    assert book.order(2).post_only is True


def test_events_carry_the_seq_and_ts_of_their_command() -> None:
    book = _book((1, 7, SELL, 100, 2), (2, 8, SELL, 110, 2), (3, 6, SELL, 120, 2))
    events = book.limit(S, T, 4, 8, BUY, 120, 9, stp=CANCEL_OLDEST)
    assert len(events) >= 6
    assert {(e.seq, e.ts) for e in events} == {(S, T)}


# Cancel


def test_cancel_removes_the_order_and_releases_its_open_qty() -> None:
    book = _book((1, 7, BUY, 100, 5), (2, 6, BUY, 100, 3))
    events = book.cancel(S, T, 1)
    assert events == [Cancelled(S, T, 1, 7, 5, BY_REQUEST), LevelChanged(S, T, BUY, 100, 3)]
    assert _ids(book, BUY, 100) == [2]
    assert book.order(1) is None
    assert book.open_order_count == 1


def test_cancel_of_a_partly_filled_order_releases_only_what_is_open() -> None:
    book = _book((1, 7, SELL, 100, 5))
    book.market(0, 0, 2, 8, BUY, 2)
    events = book.cancel(S, T, 1)
    assert events == [Cancelled(S, T, 1, 7, 3, BY_REQUEST), LevelChanged(S, T, SELL, 100, 0)]


def test_cancel_of_the_last_order_at_the_touch_moves_the_touch() -> None:
    book = _book((1, 7, SELL, 100, 5), (2, 7, SELL, 130, 1))
    events = book.cancel(S, T, 1)
    assert events == [Cancelled(S, T, 1, 7, 5, BY_REQUEST), LevelChanged(S, T, SELL, 100, 0)]
    assert book.best_ask() == (130, 1)
    assert book.orders_at(SELL, 100) == []


def test_cancelling_many_orders_in_the_middle_of_a_level_keeps_it_fifo() -> None:
    count = 3 * COMPACT_SLACK
    book = _book(*((i, i % 3, SELL, 100, 1) for i in range(1, count + 1)))
    for i in range(4, count - 3):
        book.cancel(0, 0, i)
    survivors = [1, 2, 3, count - 3, count - 2, count - 1, count]
    assert _ids(book, SELL, 100) == survivors
    assert book.best_ask() == (100, len(survivors))
    book.check()
    events = book.market(S, T, 1000, 99, BUY, 5)
    assert [e.maker_order_id for e in events if type(e) is Trade] == survivors[:5]
    assert _ids(book, SELL, 100) == survivors[5:]


def test_matching_steps_over_cancelled_entries_in_time_order() -> None:
    # Cancelled entries may stay queued between live orders until compaction: here just below the threshold,
    # with an own order at the front for self-trade prevention to remove as matching starts.
    dead = range(2, COMPACT_SLACK + 5)
    book = _book((1, 8, SELL, 100, 1), *((i, 7, SELL, 100, 1) for i in dead), (100, 7, SELL, 100, 2),
                 (101, 6, SELL, 100, 2), (102, 6, SELL, 100, 2))
    for i in dead:
        book.cancel(0, 0, i)
    events = book.market(S, T, 200, 8, BUY, 3, stp=CANCEL_OLDEST)
    assert events == [
        Accepted(S, T, 200, 8, BUY, None, 3),
        Cancelled(S, T, 1, 8, 1, SELF_TRADE),
        _trade(100, 2, 100, 7, 200, 8, BUY, 0),
        _trade(100, 1, 101, 6, 200, 8, BUY, 1),
        LevelChanged(S, T, SELL, 100, 3),
    ]
    book.check()
    assert _ids(book, SELL, 100) == [101, 102]
    assert [e.maker_order_id for e in book.market(0, 0, 201, 9, BUY, 3) if type(e) is Trade] == [101, 102]


# Amend


def test_amend_to_a_lower_qty_keeps_the_orders_place() -> None:
    book = _book((1, 7, BUY, 100, 5), (2, 6, BUY, 100, 5))
    events = book.amend(S, T, 1, qty=2)
    assert events == [Amended(S, T, 1, 100, 2, True), LevelChanged(S, T, BUY, 100, 7)]
    assert _ids(book, BUY, 100) == [1, 2]
    trades = [e for e in book.market(0, 0, 3, 8, SELL, 1) if type(e) is Trade]
    assert trades[0].maker_order_id == 1


def test_amend_to_a_higher_qty_loses_the_orders_place() -> None:
    book = _book((1, 7, BUY, 100, 5), (2, 6, BUY, 100, 5))
    events = book.amend(S, T, 1, qty=8)
    assert events == [Amended(S, T, 1, 100, 8, False), LevelChanged(S, T, BUY, 100, 13)]
    assert _ids(book, BUY, 100) == [2, 1]
    book.check()


def test_amend_of_a_post_only_order_to_a_crossing_price_is_refused_and_changes_nothing() -> None:
    book = _book((1, 7, BUY, 90, 5, {"post_only": True}), (2, 6, SELL, 100, 3))
    before = book.resting_orders()
    assert book.amend(S, T, 1, price=100) == [Rejected(S, T, 1, types.WOULD_TAKE)]
    assert book.resting_orders() == before


def test_amend_of_a_post_only_order_to_a_price_that_does_not_cross_is_allowed() -> None:
    book = _book((1, 7, BUY, 90, 5, {"post_only": True}), (2, 6, SELL, 100, 3))
    events = book.amend(S, T, 1, price=80)
    assert events == [Amended(S, T, 1, 80, 5, False), LevelChanged(S, T, BUY, 90, 0), LevelChanged(S, T, BUY, 80, 5)]
    assert book.order(1).post_only is True


# Self-trade prevention


def test_stp_decrement_is_refused_for_a_budget_order() -> None:
    book = _book((1, 7, SELL, 100, 2))
    before = book.resting_orders()
    assert book.buy_with_budget(S, T, 2, 7, 500, stp=DECREMENT) == [Rejected(S, T, 2, types.INVALID_STP_MODE)]
    assert book.resting_orders() == before


@pytest.mark.parametrize("stp", [CANCEL_NEWEST, CANCEL_BOTH, DECREMENT])
def test_fok_that_would_meet_its_own_order_is_killed(stp: str) -> None:
    book = _book((1, 6, SELL, 100, 1), (2, 7, SELL, 100, 2), (3, 6, SELL, 100, 9))
    before = book.resting_orders()
    events = book.limit(S, T, 4, 7, BUY, 100, 3, tif=FOK, stp=stp)
    assert events == [Accepted(S, T, 4, 7, BUY, 100, 3), Cancelled(S, T, 4, 7, 3, FILL_OR_KILL)]
    assert book.resting_orders() == before


# Cancelled whole: accepted, then cancelled with all of its qty and the reason, the book exactly as it was.
# ``fill_or_kill`` is "A FOK order could not be filled in full", even when it does not cross; ``expired`` is for IOC
# and market orders.

CANCELLED_WHOLE = {
    "ioc that does not cross expires and never rests": (
        [(1, 7, SELL, 100, 2)], lambda b: b.limit(S, T, 2, 8, BUY, 90, 5, tif=IOC),
        [Accepted(S, T, 2, 8, BUY, 90, 5), Cancelled(S, T, 2, 8, 5, EXPIRED)]),
    "fok that cannot fill": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 110, 3)], lambda b: b.limit(S, T, 3, 8, BUY, 110, 6, tif=FOK),
        [Accepted(S, T, 3, 8, BUY, 110, 6), Cancelled(S, T, 3, 8, 6, FILL_OR_KILL)]),
    "fok counts only liquidity within its limit": (
        [(1, 7, SELL, 100, 2), (2, 6, SELL, 120, 10)], lambda b: b.limit(S, T, 3, 8, BUY, 110, 3, tif=FOK),
        [Accepted(S, T, 3, 8, BUY, 110, 3), Cancelled(S, T, 3, 8, 3, FILL_OR_KILL)]),
    "fok that does not cross is killed as fill or kill": (
        [(1, 7, SELL, 100, 2)], lambda b: b.limit(S, T, 2, 8, BUY, 90, 1, tif=FOK),
        [Accepted(S, T, 2, 8, BUY, 90, 1), Cancelled(S, T, 2, 8, 1, FILL_OR_KILL)]),
    "fok on an empty book is killed as fill or kill": (
        [], lambda b: b.limit(S, T, 1, 8, SELL, 90, 1, tif=FOK),
        [Accepted(S, T, 1, 8, SELL, 90, 1), Cancelled(S, T, 1, 8, 1, FILL_OR_KILL)]),
    "market order against an empty side expires": (
        [(1, 7, BUY, 90, 5)], lambda b: b.market(S, T, 2, 8, BUY, 3),
        [Accepted(S, T, 2, 8, BUY, None, 3), Cancelled(S, T, 2, 8, 3, EXPIRED)]),
    "budget below the best ask expires without trading": (
        [(1, 7, SELL, 100, 1)], lambda b: b.buy_with_budget(S, T, 2, 8, 99),
        [Accepted(S, T, 2, 8, BUY, None, None, 99), Cancelled(S, T, 2, 8, 0, EXPIRED)]),
    "stp cancel newest cancels the incoming order and keeps the resting one": (
        [(1, 7, SELL, 100, 5)], lambda b: b.limit(S, T, 2, 7, BUY, 100, 3, stp=CANCEL_NEWEST),
        [Accepted(S, T, 2, 7, BUY, 100, 3), Cancelled(S, T, 2, 7, 3, SELF_TRADE)]),
}


@pytest.mark.parametrize(("orders", "command", "events"), CANCELLED_WHOLE.values(), ids=CANCELLED_WHOLE.keys())
def test_an_order_that_cannot_trade_as_asked_is_cancelled_whole_and_changes_nothing(orders, command, events) -> None:
    book = _book(*orders)
    before = book.resting_orders()
    assert command(book) == events
    assert book.resting_orders() == before
    book.check()


# Rejections: each leaves the book exactly as it was.


def _reference_book() -> OrderBook:
    return _book((1, 7, BUY, 90, 5), (2, 6, SELL, 100, 3, {"post_only": True}), (3, 7, SELL, 110, 2))


REJECTIONS = {
    "order id is a string": (lambda b: b.limit(S, T, "9", 7, BUY, 80, 1), types.INVALID_ORDER_ID),
    "order id is a float": (lambda b: b.market(S, T, 9.0, 7, BUY, 1), types.INVALID_ORDER_ID),
    "order id is a bool": (lambda b: b.buy_with_budget(S, T, True, 7, 100), types.INVALID_ORDER_ID),
    "order id is zero": (lambda b: b.limit(S, T, 0, 7, BUY, 80, 1), types.INVALID_ORDER_ID),
    "order id is negative": (lambda b: b.market(S, T, -3, 7, BUY, 1), types.INVALID_ORDER_ID),
    "cancel by a bool id": (lambda b: b.cancel(S, T, True), types.INVALID_ORDER_ID),
    "amend by a float id": (lambda b: b.amend(S, T, 1.0, qty=1), types.INVALID_ORDER_ID),
    "post only is a string": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, post_only="no"), types.INVALID_POST_ONLY),
    "post only is zero": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, post_only=0), types.INVALID_POST_ONLY),
    "time in force is a list": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, tif=["GTC"]),
                                types.INVALID_TIME_IN_FORCE),
    "stp is a dict": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, stp={}), types.INVALID_STP_MODE),
    "side is upper case": (lambda b: b.limit(S, T, 9, 7, "BUY", 80, 1), types.INVALID_SIDE),
    "market side unknown": (lambda b: b.market(S, T, 9, 7, "long", 1), types.INVALID_SIDE),
    "qty is zero": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 0), types.INVALID_QTY),
    "qty is negative": (lambda b: b.market(S, T, 9, 7, SELL, -1), types.INVALID_QTY),
    "qty is a float": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1.0), types.INVALID_QTY),
    "qty is a bool": (lambda b: b.market(S, T, 9, 7, BUY, True), types.INVALID_QTY),
    "amended qty is zero": (lambda b: b.amend(S, T, 1, qty=0), types.INVALID_QTY),
    "price is zero": (lambda b: b.limit(S, T, 9, 7, BUY, 0, 1), types.INVALID_PRICE),
    "price is negative": (lambda b: b.limit(S, T, 9, 7, SELL, -100, 1), types.INVALID_PRICE),
    "price is a float": (lambda b: b.limit(S, T, 9, 7, BUY, 80.0, 1), types.INVALID_PRICE),
    "price is a bool": (lambda b: b.limit(S, T, 9, 7, BUY, True, 1), types.INVALID_PRICE),
    "amended price is a float": (lambda b: b.amend(S, T, 1, price=80.0), types.INVALID_PRICE),
    "price off the tick": (lambda b: b.limit(S, T, 9, 7, BUY, 85, 1), types.OFF_TICK_PRICE),
    "amended price off the tick": (lambda b: b.amend(S, T, 1, price=95), types.OFF_TICK_PRICE),
    "budget is zero": (lambda b: b.buy_with_budget(S, T, 9, 7, 0), types.INVALID_BUDGET),
    "budget is negative": (lambda b: b.buy_with_budget(S, T, 9, 7, -500), types.INVALID_BUDGET),
    "budget is a float": (lambda b: b.buy_with_budget(S, T, 9, 7, 500.0), types.INVALID_BUDGET),
    "budget is a bool": (lambda b: b.buy_with_budget(S, T, 9, 7, True), types.INVALID_BUDGET),
    "time in force unknown": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, tif="DAY"), types.INVALID_TIME_IN_FORCE),
    "time in force lower case": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, tif="gtc"), types.INVALID_TIME_IN_FORCE),
    "limit stp unknown": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, stp="none"), types.INVALID_STP_MODE),
    "market stp unknown": (lambda b: b.market(S, T, 9, 7, BUY, 1, stp="CANCEL_BOTH"), types.INVALID_STP_MODE),
    "budget stp decrement": (lambda b: b.buy_with_budget(S, T, 9, 7, 500, stp=DECREMENT), types.INVALID_STP_MODE),
    "post only with IOC": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, tif=IOC, post_only=True),
                           types.POST_ONLY_REQUIRES_GTC),
    "post only with FOK": (lambda b: b.limit(S, T, 9, 7, BUY, 80, 1, tif=FOK, post_only=True),
                           types.POST_ONLY_REQUIRES_GTC),
    "limit reuses a resting id": (lambda b: b.limit(S, T, 1, 7, BUY, 80, 1), types.DUPLICATE_ORDER_ID),
    "market reuses a resting id": (lambda b: b.market(S, T, 2, 7, BUY, 1), types.DUPLICATE_ORDER_ID),
    "budget reuses a resting id": (lambda b: b.buy_with_budget(S, T, 3, 7, 500), types.DUPLICATE_ORDER_ID),
    "cancel of an unknown id": (lambda b: b.cancel(S, T, 9), types.UNKNOWN_ORDER),
    "amend of an unknown id": (lambda b: b.amend(S, T, 9, qty=1), types.UNKNOWN_ORDER),
    "post only buy at the ask": (lambda b: b.limit(S, T, 9, 7, BUY, 100, 1, post_only=True), types.WOULD_TAKE),
    "post only sell at the bid": (lambda b: b.limit(S, T, 9, 6, SELL, 90, 1, post_only=True), types.WOULD_TAKE),
    "post only amended to cross": (lambda b: b.amend(S, T, 2, price=90), types.WOULD_TAKE),
    "amend to the same qty": (lambda b: b.amend(S, T, 1, qty=5), types.NO_CHANGE),
    "amend to the same price": (lambda b: b.amend(S, T, 1, price=90), types.NO_CHANGE),
    "amend of nothing": (lambda b: b.amend(S, T, 1), types.NO_CHANGE),
}


@pytest.mark.parametrize(("command", "code"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_invalid_command_is_rejected_and_changes_nothing(command, code: str) -> None:
    book = _reference_book()
    before = book.resting_orders()
    [event] = command(book)
    assert type(event) is Rejected
    assert (event.seq, event.ts, event.code) == (S, T, code)
    assert book.resting_orders() == before
    book.check()


def test_every_rejection_code_has_an_example() -> None:
    not_rejections = {
        types.BUY, types.SELL, *types.TIME_IN_FORCE, *types.STP_MODES,
        types.BY_REQUEST, types.EXPIRED, types.FILL_OR_KILL, types.SELF_TRADE,
    }
    codes = {v for k, v in vars(types).items() if k.isupper() and type(v) is str} - not_rejections
    assert codes == {code for _, code in REJECTIONS.values()}


def test_a_rejected_duplicate_leaves_the_original_order_alone() -> None:
    book = _book((1, 7, BUY, 90, 5))
    assert book.limit(S, T, 1, 8, SELL, 90, 5) == [Rejected(S, T, 1, types.DUPLICATE_ORDER_ID)]
    assert book.order(1).qty == 5
    assert book.best_ask() is None


def test_an_id_is_unknown_once_its_order_has_filled() -> None:
    book = _book((1, 7, SELL, 100, 2))
    book.market(0, 0, 2, 8, BUY, 2)
    assert book.cancel(S, T, 1) == [Rejected(S, T, 1, types.UNKNOWN_ORDER)]
    assert book.amend(S, T, 1, qty=1) == [Rejected(S, T, 1, types.UNKNOWN_ORDER)]


# Queries


def test_depth_lists_levels_best_first_up_to_the_limit() -> None:
    book = _book((1, 7, BUY, 80, 1), (2, 7, BUY, 100, 2), (3, 6, BUY, 90, 3), (4, 6, BUY, 100, 4),
                 (5, 7, SELL, 130, 5), (6, 6, SELL, 110, 6), (7, 6, SELL, 120, 7))
    assert book.depth(2) == ([(100, 6), (90, 3)], [(110, 6), (120, 7)])
    assert book.depth(10) == ([(100, 6), (90, 3), (80, 1)], [(110, 6), (120, 7), (130, 5)])
    assert book.depth(0) == ([], [])
    assert book.best_bid() == (100, 6)
    assert book.best_ask() == (110, 6)


def test_depth_stays_exact_after_many_levels_empty_behind_the_touch() -> None:
    book = _book(*((i, 7, BUY, i * TICK, 1) for i in range(1, 201)))
    for i in range(1, 198):
        book.cancel(0, 0, i)
    assert book.depth(5) == ([(2000, 1), (1990, 1), (1980, 1)], [])
    book.limit(0, 0, 500, 6, BUY, 500, 2)
    book.limit(0, 0, 501, 6, BUY, 1500, 3)
    assert book.depth(10) == ([(2000, 1), (1990, 1), (1980, 1), (1500, 3), (500, 2)], [])
    book.check()
    events = book.market(S, T, 502, 8, SELL, 7)
    assert [(e.price, e.qty) for e in events if type(e) is Trade] == [(2000, 1), (1990, 1), (1980, 1), (1500, 3),
                                                                       (500, 1)]
    assert book.depth(10) == ([(500, 1)], [])


def test_queries_on_an_empty_book() -> None:
    book = OrderBook(TICK)
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.depth(5) == ([], [])
    assert book.orders_at(BUY, 100) == []
    assert book.order(1) is None
    assert book.open_order_count == 0
    assert book.resting_orders() == []


def test_order_and_orders_at_return_copies() -> None:
    book = _book((1, 7, BUY, 100, 5, {"stp": DECREMENT}))
    order = book.order(1)
    assert (order.order_id, order.account, order.side, order.price, order.qty, order.post_only, order.stp) == (
        1, 7, BUY, 100, 5, False, DECREMENT)
    order.qty = 99
    book.orders_at(BUY, 100)[0].qty = 98
    assert book.order(1).qty == 5
    assert book.best_bid() == (100, 5)


def test_resting_orders_lists_bids_then_asks_best_first_in_time_order() -> None:
    book = _book((1, 7, BUY, 80, 1), (2, 7, BUY, 100, 2), (3, 6, BUY, 100, 3), (4, 7, SELL, 120, 4),
                 (5, 6, SELL, 110, 5))
    assert [o.order_id for o in book.resting_orders()] == [2, 3, 1, 5, 4]
    assert book.open_order_count == 5


def test_tick_must_be_a_positive_int() -> None:
    for tick in (0, -10, 10.0, True):
        with pytest.raises(ValueError, match="tick"):
            OrderBook(tick)


# check()


def test_check_passes_on_a_busy_book() -> None:
    book = _book((1, 7, BUY, 80, 1), (2, 7, BUY, 100, 2), (3, 6, SELL, 120, 4))
    book.amend(0, 0, 1, qty=5)
    book.cancel(0, 0, 2)
    book.check()


def test_check_catches_a_level_total_out_of_step() -> None:
    book = _book((1, 7, SELL, 100, 5), (2, 6, SELL, 100, 1))
    book._asks.levels[100].total += 1  # private: the one way to break a level from outside
    with pytest.raises(AssertionError, match="total"):
        book.check()


def test_check_catches_an_order_missing_from_the_id_map() -> None:
    book = _book((1, 7, SELL, 100, 5))
    del book._orders[1]
    with pytest.raises(AssertionError, match="id map"):
        book.check()


# Rebuild


def _busy_book() -> OrderBook:
    """A book reached through fills, amends, cancels and self-trade prevention, not just rests."""
    book = _book(
        (1, 7, BUY, 90, 5), (2, 6, BUY, 90, 2, {"stp": CANCEL_OLDEST}), (3, 8, BUY, 80, 4, {"post_only": True}),
        (4, 6, SELL, 110, 3, {"stp": DECREMENT}), (5, 7, SELL, 110, 2), (6, 8, SELL, 120, 6, {"post_only": True}),
        (7, 6, SELL, 130, 1, {"stp": CANCEL_BOTH}),
    )
    book.amend(0, 0, 1, qty=3)
    book.amend(0, 0, 2, qty=6)
    book.market(0, 0, 8, 9, SELL, 1)
    book.cancel(0, 0, 7)
    book.limit(0, 0, 9, 7, SELL, 100, 2, stp=DECREMENT)
    return book


FOLLOWING = (
    lambda b, s: b.amend(s, s, 3, price=100),  # refused: the rebuilt order must still be post-only
    lambda b, s: b.amend(s, s, 4, price=90, qty=5),  # meets its own bid: the rebuilt order must still decrement
    lambda b, s: b.limit(s, s, 10, 7, BUY, 110, 4),
    lambda b, s: b.market(s, s, 11, 6, BUY, 4, stp=DECREMENT),
    lambda b, s: b.amend(s, s, 6, price=90),
    lambda b, s: b.buy_with_budget(s, s, 12, 9, 1_000),
    lambda b, s: b.limit(s, s, 13, 8, SELL, 80, 20, tif=FOK),
    lambda b, s: b.limit(s, s, 14, 8, SELL, 80, 3, tif=IOC, stp=CANCEL_BOTH),
    lambda b, s: b.cancel(s, s, 1),
    lambda b, s: b.market(s, s, 15, 6, SELL, 50),
)


def test_rebuilt_book_produces_the_same_events_as_the_original() -> None:
    original = _busy_book()
    rebuilt = OrderBook.rebuild(TICK, original.resting_orders())
    assert rebuilt.resting_orders() == original.resting_orders()
    assert rebuilt.depth(10) == original.depth(10)
    trades = 0
    for seq, command in enumerate(FOLLOWING, start=S):
        events = command(original, seq)
        assert command(rebuilt, seq) == events
        assert rebuilt.resting_orders() == original.resting_orders()
        trades += sum(type(e) is Trade for e in events)
    assert trades >= 5
    rebuilt.check()
