"""What a batch changed for each account (``exchange.account_events``), and where a snapshot stands among them."""

from exchange.account_events import Snapshot, account_events
from exchange.commands import CancelOrder, Deposit, PlaceOrder
from exchange.ledger import CASH
from tests.support.engine import ASK, COMPUTE, Desk, open_market


def test_a_deposit_is_the_accounts_cash_balance_alone():
    desk = Desk()
    market = open_market(desk)
    desk.ok(Deposit(market.bob, 2_000_000))
    [events] = account_events(desk.effects)
    assert events.account_id == market.bob
    assert [(b.asset, b.available, b.held) for b in events.balances] == [(CASH, *market.balance(market.bob))]
    assert events.orders == [] and events.fills == [] and events.seqs == {}
    assert events.entry == max(desk.entries)


def test_a_trade_reaches_both_sides_with_their_order_fill_and_balances():
    desk = Desk()
    market = open_market(desk)
    ask = desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=5))
    bid = desk.ok(PlaceOrder(market.alice, COMPUTE, "buy", price=ASK, qty=2))
    by_account = {events.account_id: events for events in account_events(desk.effects)}
    assert set(by_account) == {market.issuer, market.alice}  # the fee account is a system account
    seq = market.engine.instruments[COMPUTE].seq
    alice, issuer = by_account[market.alice], by_account[market.issuer]
    assert [(o.id, o.status, o.filled_qty) for o in alice.orders] == [(bid.id, "filled", 2)]
    assert [(o.id, o.status, o.open_qty) for o in issuer.orders] == [(ask.id, "open", 3)]
    assert [(f.role, f.side, f.price, f.qty, f.seq) for f in alice.fills] == [("taker", "buy", ASK, 2, seq)]
    assert [(f.role, f.side) for f in issuer.fills] == [("maker", "sell")]
    assert alice.fills[0].id == issuer.fills[0].id
    assert {b.asset: (b.available, b.held) for b in alice.balances} == {
        asset: market.balance(market.alice, asset) for asset in (CASH, COMPUTE)}
    assert alice.seqs == issuer.seqs == {COMPUTE: seq}


def test_a_snapshot_holds_the_batches_committed_before_it_and_no_others():
    desk = Desk()
    market = open_market(desk)
    desk.ok(Deposit(market.bob, 1_000_000))
    [deposit] = account_events(desk.effects)
    order = desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=ASK - 50_000, qty=1))
    [placed] = account_events(desk.effects)
    snapshot = Snapshot(max(desk.entries), {COMPUTE: market.engine.instruments[COMPUTE].seq})
    assert snapshot.holds(deposit) and snapshot.holds(placed)

    desk.ok(CancelOrder(market.bob, order.id))
    [cancelled] = account_events(desk.effects)
    desk.ok(Deposit(market.bob, 1_000_000))
    [later] = account_events(desk.effects)
    assert not snapshot.holds(cancelled) and not snapshot.holds(later)
    # A batch that posted no journal entry is placed by its instruments' seqs alone.
    seqs_only = type(placed)(placed.account_id, 0, placed.seqs, placed.orders, [], [])
    assert snapshot.holds(seqs_only)
    assert not Snapshot(0, {COMPUTE: placed.seqs[COMPUTE] - 1}).holds(seqs_only)
