"""What a batch changed for each account (``exchange.account_events``), and where a snapshot stands among them."""

from exchange.account_events import Snapshot, account_events
from exchange.commands import Attempt, CancelOrder, Deposit, PlaceOrder, Redeem, RegisterProvider, Reserve, Settle
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


def test_a_settled_call_reaches_the_providers_account_as_its_deliveries():
    desk = Desk()
    market = open_market(desk)
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=1))
    desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=ASK, qty=1))
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    serving = desk.ok(RegisterProvider(market.issuer, COMPUTE, "http://127.0.0.1:9/v1", "m", b"sealed"))
    held = desk.ok(Reserve(market.bob, COMPUTE, 5_000))
    assert account_events(desk.effects) == []  # a reservation changes nothing an account's channel shows
    settled = desk.ok(Settle(held.id, [Attempt(serving.id, "failed", latency_us=900),
                                       Attempt(serving.id, "ok", 120, 380, 2_000, 9_000)]))

    [events] = account_events(desk.effects)
    assert events.account_id == market.issuer  # the buyer's quota is not on its channel
    assert (events.orders, events.fills, events.balances, events.placed) == ([], [], [], False)
    assert [(d.usage_id, d.reservation_id, d.symbol, d.provider_id, d.status, d.prompt_tokens, d.completion_tokens,
             d.ttft_us, d.latency_us, d.delivered, d.obligation, d.created_at) for d in events.deliveries] == [
        (a.usage_id, held.id, COMPUTE, serving.id, a.status, a.prompt_tokens, a.completion_tokens, a.ttft_us,
         a.latency_us, a.delivered, a.obligation, settled.created_at) for a in settled.attempts]
    assert [d.delivered for d in events.deliveries] == [0, 500]
    # Deliveries are in no snapshot: whatever a snapshot holds, they are news.
    assert not Snapshot(max(desk.entries), {COMPUTE: market.engine.instruments[COMPUTE].seq}).holds(events)


def test_a_redemption_reaches_each_provider_of_the_instrument_without_naming_the_buyer():
    desk = Desk()
    market = open_market(desk)
    serving = desk.ok(RegisterProvider(market.issuer, COMPUTE, "http://127.0.0.1:9/v1", "m", b"sealed"))
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=3))
    desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=ASK, qty=3))
    account_events(desk.effects)
    redemption = desk.ok(Redeem(market.bob, COMPUTE, 2))

    by_account = {events.account_id: events for events in account_events(desk.effects)}
    issuer, bob = by_account[market.issuer], by_account[market.bob]
    assert [(r.id, r.provider_id, r.symbol, r.qty) for r in issuer.redemptions] == [
        (redemption.id, serving.id, COMPUTE, 2)]
    assert (issuer.orders, issuer.fills, issuer.balances, issuer.placed) == ([], [], [], False)
    assert bob.redemptions == [] and bob.placed  # the buyer sees its balance move, not a provider's news
