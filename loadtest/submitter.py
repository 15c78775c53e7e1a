"""The W2-like mix of commands sent straight to a sequencer by the exchange and feed benchmarks: limits near and far
from the touch, a tenth of them crossing, market orders and sweeps, and cancels, keeping about 1,000 orders live."""

import random

from exchange.commands import CancelOrder, OrderView, PlaceOrder
from exchange.sequencer import Sequencer
from loadtest.exchange_worker import MID, SYMBOL, TICK
from matching.types import BUY, IOC, SELL

LIVE_LOW, LIVE_HIGH = 900, 1_100


class Submitter:
    """One client: its account, its open orders, and the W2-like mix of commands."""

    def __init__(self, seq: Sequencer, account_id: int, rng: random.Random) -> None:
        self.seq = seq
        self.account_id = account_id
        self.rng = rng
        self.open: list[int] = []

    def next_command(self) -> tuple[str, PlaceOrder | CancelOrder]:
        rng = self.rng
        book = self.seq.engine.instruments[SYMBOL].book
        live = book.open_order_count
        roll = rng.random()
        if live > LIVE_HIGH:
            roll = 0.6
        elif live < LIVE_LOW:
            roll = 0.0
        if 0.55 <= roll < 0.90:
            # Orders filled since they were placed are not cancelled: the submitter learns of fills (as a client
            # would from its private feed) by looking at the book.
            self.open = [order_id for order_id in self.open if order_id in book]
            if self.open:
                return "cancel", CancelOrder(self.account_id, self.open.pop(rng.randrange(len(self.open))))
        bid, ask = book.best_bid(), book.best_ask()
        bid_px = bid[0] if bid else MID - TICK
        ask_px = ask[0] if ask else MID + TICK
        side = BUY if rng.random() < 0.5 else SELL
        if roll < 0.90:
            kind = "limit"
            if rng.random() < 0.5:
                if rng.random() < 0.10:
                    price, kind = (ask_px if side == BUY else bid_px), "crossing_limit"
                else:
                    offset = rng.randint(0, 5) * TICK
                    price = bid_px - offset if side == BUY else ask_px + offset
            else:
                offset = rng.randint(1, 1000) * TICK
                price = bid_px - offset if side == BUY else ask_px + offset
            return kind, PlaceOrder(self.account_id, SYMBOL, side, price=max(price, TICK), qty=rng.randint(1, 500))
        bids, asks = book.depth(6)
        opposite = asks if side == BUY else bids
        if not opposite:
            return "limit", PlaceOrder(self.account_id, SYMBOL, side, price=MID, qty=rng.randint(1, 500))
        if rng.random() < 0.85:
            return "market", PlaceOrder(self.account_id, SYMBOL, side, type="market", qty=max(1, opposite[0][1] // 2))
        depth = min(len(opposite), rng.randint(2, 5))
        qty = sum(total for _, total in opposite[: depth - 1]) + max(1, opposite[depth - 1][1] // 2)
        return "sweep", PlaceOrder(self.account_id, SYMBOL, side, price=opposite[depth - 1][0], qty=qty, tif=IOC)

    def learn(self, result: object) -> None:
        if isinstance(result, OrderView) and result.status == "open":
            self.open.append(result.id)
