"""The real book against the naive model: random commands from a few accounts, identical events every step."""

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from matching.book import OrderBook
from matching.types import BUY, FOK, GTC, IOC, SELL, STP_MODES
from tests.matching.model import Model

TICK = 10
ACCOUNTS = (1, 2, 3)
ON_TICK = tuple(range(TICK, 13 * TICK, TICK))
OFF_TICK = (15, 61, 99)
STPS = tuple(sorted(STP_MODES))

# Wrong values in the places of valid ones; each reaches a different rejection.
BAD_IDS = ("7", 7.0, True, None)
BAD_QTYS = (0, -1, 2.0, True)
BAD_PRICES = (0, -TICK, 50.0, True)
BAD_SIDES = ("BUY", "", None)
BAD_TIFS = ("gtc", "DAY", None)
BAD_STPS = ("none", "CANCEL_NEWEST", None)
BAD_BUDGETS = (0, -100, 100.0, False)


def _fields(order: msgspec.Struct) -> tuple:
    return msgspec.structs.astuple(order)


class BookAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook(TICK)
        self.model = Model(TICK)
        self.seq = 0
        self.next_id = 1

    # Drawing arguments: mostly valid, sometimes not. The selector shrinks towards the valid choice.

    def _pick(self, data, valid: st.SearchStrategy, invalid: tuple, one_in: int = 25):
        if data.draw(st.integers(0, one_in - 1), label="invalid?") == one_in - 1:
            return data.draw(st.sampled_from(invalid), label="invalid")
        return data.draw(valid)

    def _new_id(self, data):
        choice = data.draw(st.integers(0, 29), label="id kind")
        live = [o.order_id for o in self.model.orders]
        if choice == 28 and live:
            return data.draw(st.sampled_from(live), label="duplicate id")
        if choice == 29:
            return data.draw(st.sampled_from(BAD_IDS), label="bad id")
        self.next_id += 1
        return self.next_id - 1

    def _existing_id(self, data):
        live = [o.order_id for o in self.model.orders]
        if live and data.draw(st.integers(0, 9), label="unknown id?") < 9:
            return data.draw(st.sampled_from(live), label="live id")
        return data.draw(st.sampled_from((self.next_id, self.next_id + 50, 0, -3)), label="unknown id")

    def _price(self, data):
        price = self._pick(data, st.sampled_from(ON_TICK), BAD_PRICES)
        if data.draw(st.integers(0, 19), label="off tick?") == 19:
            price = data.draw(st.sampled_from(OFF_TICK), label="off-tick price")
        return price

    def _run(self, command: str, *args, **kwargs) -> None:
        self.seq += 1
        got = getattr(self.book, command)(self.seq, self.seq * 1000, *args, **kwargs)
        expected = getattr(self.model, command)(self.seq, self.seq * 1000, *args, **kwargs)
        assert got == expected, f"{command}{args}{kwargs}\nbook:  {got}\nmodel: {expected}"

    # Commands

    @rule(data=st.data())
    def limit(self, data) -> None:
        order_id = self._new_id(data)
        account = data.draw(st.sampled_from(ACCOUNTS), label="account")
        side = self._pick(data, st.sampled_from((BUY, SELL)), BAD_SIDES)
        price = self._price(data)
        qty = self._pick(data, st.integers(1, 6), BAD_QTYS)
        tif = self._pick(data, st.sampled_from((GTC, GTC, GTC, IOC, FOK)), BAD_TIFS)
        post_only = data.draw(st.integers(0, 5), label="post_only?") == 5
        stp = self._pick(data, st.sampled_from(STPS), BAD_STPS)
        self._run("limit", order_id, account, side, price, qty, tif=tif, post_only=post_only, stp=stp)

    def _valid_order(self, data, crossing: bool) -> tuple[int, int, str, int]:
        """A new order id, an account, a side and a price: on its own side of the book, or into the other side."""
        order_id = self._new_id(data)
        account = data.draw(st.sampled_from(ACCOUNTS), label="account")
        side = data.draw(st.sampled_from((BUY, SELL)), label="side")
        low, high = ON_TICK[:7], ON_TICK[5:]
        prices = (high if side == BUY else low) if crossing else (low if side == BUY else high)
        return order_id, account, side, data.draw(st.sampled_from(prices), label="price")

    @rule(data=st.data())
    def rest(self, data) -> None:
        """A valid GTC order, mostly away from the touch: it keeps the book deep enough to trade against."""
        order_id, account, side, price = self._valid_order(data, crossing=False)
        qty = data.draw(st.integers(1, 6), label="qty")
        stp = data.draw(st.sampled_from(STPS), label="stp")
        self._run("limit", order_id, account, side, price, qty, post_only=False, stp=stp)

    @rule(data=st.data())
    def take(self, data) -> None:
        """A valid order priced into the other side: it trades, and often meets its own account's orders."""
        order_id, account, side, price = self._valid_order(data, crossing=True)
        qty = data.draw(st.integers(1, 10), label="qty")
        tif = data.draw(st.sampled_from((GTC, IOC, FOK)), label="tif")
        stp = data.draw(st.sampled_from(STPS), label="stp")
        self._run("limit", order_id, account, side, price, qty, tif=tif, stp=stp)

    @rule(data=st.data())
    def market(self, data) -> None:
        order_id = self._new_id(data)
        account = data.draw(st.sampled_from(ACCOUNTS), label="account")
        side = self._pick(data, st.sampled_from((BUY, SELL)), BAD_SIDES)
        qty = self._pick(data, st.integers(1, 12), BAD_QTYS)
        stp = self._pick(data, st.sampled_from(STPS), BAD_STPS)
        self._run("market", order_id, account, side, qty, stp=stp)

    @rule(data=st.data())
    def buy_with_budget(self, data) -> None:
        order_id = self._new_id(data)
        account = data.draw(st.sampled_from(ACCOUNTS), label="account")
        budget = self._pick(data, st.integers(1, 800), BAD_BUDGETS)
        stp = self._pick(data, st.sampled_from(STPS), BAD_STPS)
        self._run("buy_with_budget", order_id, account, budget, stp=stp)

    @precondition(lambda self: self.model.orders)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        self._run("cancel", self._existing_id(data))

    @precondition(lambda self: self.model.orders)
    @rule(data=st.data())
    def amend(self, data) -> None:
        order_id = self._existing_id(data)
        kind = data.draw(st.sampled_from(("price", "qty", "both")), label="amend what")
        price = self._price(data) if kind != "qty" else None
        qty = self._pick(data, st.integers(1, 6), BAD_QTYS) if kind != "price" else None
        self._run("amend", order_id, price=price, qty=qty)

    # Invariants

    @invariant()
    def book_is_consistent(self) -> None:
        self.book.check()

    @invariant()
    def queries_agree_with_model(self) -> None:
        book, model = self.book, self.model
        bids, asks = model.depth(100)
        for n in (1, 2, 3, 100):
            assert book.depth(n) == model.depth(n), f"depth({n})"
        assert book.best_bid() == (bids[0] if bids else None)
        assert book.best_ask() == (asks[0] if asks else None)
        assert book.open_order_count == len(model.orders)
        assert [_fields(o) for o in book.resting_orders()] == model.resting_orders()
        for side, levels in ((BUY, bids), (SELL, asks)):
            for price, _ in levels:
                expected = [o for o in model.resting_orders() if o[2] == side and o[3] == price]
                assert [_fields(o) for o in book.orders_at(side, price)] == expected

    @invariant()
    def rebuild_gives_the_same_book(self) -> None:
        resting = self.book.resting_orders()
        assert OrderBook.rebuild(TICK, resting).resting_orders() == resting


BookAgainstModel.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# A fuzzer (500 runs of 40 random commands): slow, so out of the quick loop; test_book.py covers each rule there.
test_book_against_model = pytest.mark.slow(BookAgainstModel.TestCase)
