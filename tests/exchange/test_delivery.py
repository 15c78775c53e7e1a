"""Providers, quotas, reservations and settlements in the engine's memory (``tests.support.engine.Desk``).

What the sequencer commits and a restart rebuilds is in ``test_delivery_persistence.py``; the gateway over HTTP
with the ``openai`` SDK in ``tests/api/test_inference.py``.
"""

from collections import Counter
from datetime import timedelta

import pytest

from exchange import delivery
from exchange.commands import (
    ApproveIssuer,
    Attempt,
    CreateAccount,
    Done,
    ExpireReservations,
    ListInstrument,
    Mint,
    PlaceOrder,
    ProviderView,
    PublishTerms,
    Redeem,
    RegisterProvider,
    ReservationView,
    Reserve,
    RouteOrder,
    Settle,
)
from exchange.quotas import REDEMPTION_SOURCE
from exchange.records import RoutedOrder
from tests.support.engine import AT, COMPUTE, DATASET, TICK, TS, Desk, Market, engine_state, open_market

LOT = 1_000_000
"""COMPUTE's tokens per lot."""


@pytest.fixture
def market(desk: Desk) -> Market:
    """The test market, with bob holding 100 COMPUTE lots bought from the issuer."""
    market = open_market(desk)
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=100 * TICK, qty=100))
    desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=100 * TICK, qty=100))
    return market


def provider(desk: Desk, account: int, url: str = "http://127.0.0.1:9/v1") -> ProviderView:
    return desk.ok(RegisterProvider(account, COMPUTE, url, "deepseek-v3", b"sealed"))


def test_redeeming_compute_lots_grants_a_quota_of_their_tokens(desk: Desk, market: Market) -> None:
    desk.ok(Redeem(market.bob, COMPUTE, 3))
    desk.ok(Redeem(market.bob, COMPUTE, 2))
    instrument = desk.engine.instruments[COMPUTE]
    (quota,) = desk.engine.quotas.of(market.bob, instrument.id)
    assert (quota.source, quota.granted, quota.free) == (REDEMPTION_SOURCE, 5 * LOT, 5 * LOT)
    assert desk.effects.quotas == {(market.bob, instrument.id, REDEMPTION_SOURCE): quota}
    desk.ok(PublishTerms(market.issuer, DATASET, ("research",), False, None, 30, None, "Research only."))
    desk.ok(Redeem(market.issuer, DATASET, 2, terms_version=1))
    assert desk.engine.quotas.of(market.issuer, desk.engine.instruments[DATASET].id) == []


def test_a_provider_is_an_approved_issuer_with_a_valid_upstream(desk: Desk, market: Market) -> None:
    desk.assert_refused(RegisterProvider(market.rival, COMPUTE, "http://x/v1", "m", b""), "not_approved")
    desk.assert_refused(RegisterProvider(market.bob, COMPUTE, "http://x/v1", "m", b""), "not_permitted")
    desk.assert_refused(RegisterProvider(market.issuer, DATASET, "http://x/v1", "m", b""), "not_compute")
    desk.assert_refused(RegisterProvider(market.issuer, "NOPE", "http://x/v1", "m", b""), "unknown_instrument")
    for url, model, credential in (("ftp://x", "m", b""), ("http://x/v1", "", b""), ("http://x/v1", "m", b"k" * 1025),
                                   ("http://" + "x" * 600, "m", b"")):
        desk.assert_refused(RegisterProvider(market.issuer, COMPUTE, url, model, credential), "invalid_provider")
    first = provider(desk, market.issuer)
    assert (first.symbol, first.delivered, first.obligation) == (COMPUTE, 0, 5_000 * LOT)
    again = provider(desk, market.issuer, "https://elsewhere/v1")
    assert (again.id, again.base_url) == (first.id, "https://elsewhere/v1")


def test_a_call_reserves_its_worst_case_and_settles_what_was_delivered(desk: Desk, market: Market) -> None:
    desk.assert_refused(Reserve(market.bob, COMPUTE, 1_000), "no_provider")
    serving = provider(desk, market.issuer)
    desk.assert_refused(Reserve(market.bob, COMPUTE, 1_000), "quota_exceeded")
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    for command, code in ((Reserve(market.bob, COMPUTE, LOT + 1), "quota_exceeded"),
                          (Reserve(market.bob, COMPUTE, 0), "invalid_tokens"),
                          (Reserve(market.bob, "NOPE", 10), "unknown_model"),
                          (Reserve(market.bob, DATASET, 10), "not_compute"),
                          (Reserve(market.bob, "chat-general", 10, "cheapest"), "invalid_route_mode"),
                          (Reserve(market.admin, COMPUTE, 10), "not_permitted")):
        desk.assert_refused(command, code)
    held = desk.ok(Reserve(market.bob, "chat-general", 5_000, "quality"))
    assert isinstance(held, ReservationView)
    assert (held.symbol, held.source, held.tokens) == (COMPUTE, REDEMPTION_SOURCE, 5_000)
    assert [p.provider_id for p in held.providers] == [serving.id]
    (quota,) = desk.engine.quotas.of(market.bob, desk.engine.instruments[COMPUTE].id)
    assert (quota.reserved, quota.free) == (5_000, LOT - 5_000)

    desk.assert_refused(Settle(held.id, [Attempt(serving.id, "ok"), Attempt(serving.id, "ok")]), "invalid_attempts")
    desk.assert_refused(Settle(held.id, [Attempt(serving.id + 1, "ok")]), "invalid_attempts")
    desk.assert_refused(Settle(held.id, []), "invalid_attempts")
    desk.assert_refused(Settle(held.id, [Attempt(serving.id, "ok", -1)]), "invalid_attempts")
    settled = desk.ok(Settle(held.id, [Attempt(serving.id, "failed", latency_us=900),
                                       Attempt(serving.id, "ok", 120, 380, 2_000, 9_000)]))
    assert (settled.reservation_id, settled.symbol, settled.charged) == (held.id, COMPUTE, 500)
    assert [(a.status, a.prompt_tokens, a.completion_tokens, a.delivered, a.obligation) for a in settled.attempts] == [
        ("failed", 0, 0, 0, 5_000 * LOT), ("ok", 120, 380, 500, 5_000 * LOT - 500)]
    assert (quota.reserved, quota.used, quota.free) == (0, 500, LOT - 500)
    assert [row[5:10] for row in desk.effects.usages] == [(0, 0, 0, 900, "failed"), (120, 380, 2_000, 9_000, "ok")]
    answered = desk.engine.delivery.providers[serving.id]
    assert answered.delivered == 500
    assert delivery.obligation(desk.engine, answered) == 5_000 * LOT - 500
    desk.assert_refused(Settle(held.id, [Attempt(serving.id, "ok", 1, 1)]), "unknown_reservation")


def test_a_provider_reporting_more_than_was_reserved_is_credited_the_reservation(desk: Desk, market: Market) -> None:
    serving = provider(desk, market.issuer)
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    held = desk.ok(Reserve(market.bob, COMPUTE, 100))
    desk.ok(Settle(held.id, [Attempt(serving.id, "ok", 70, 900)]))
    assert [row[5:7] for row in desk.effects.usages] == [(70, 30)]
    assert desk.engine.delivery.providers[serving.id].delivered == 100


def test_an_unsettled_reservation_is_freed_whole_after_its_deadline(desk: Desk, market: Market) -> None:
    provider(desk, market.issuer)
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    held = desk.ok(Reserve(market.bob, COMPUTE, 700))
    engine = desk.engine
    (quota,) = engine.quotas.of(market.bob, engine.instruments[COMPUTE].id)
    assert desk.ok(ExpireReservations()) == Done() and quota.reserved == 700
    later = timedelta(seconds=delivery.RESERVATION_SECONDS)
    engine.apply(ExpireReservations(), TS + int(later.total_seconds() * 1_000_000), AT + later)
    assert (quota.reserved, quota.used, quota.free) == (0, 0, LOT)
    assert engine.quotas.open == {}
    assert engine.take_effects().reservations[held.id].status == "expired"


def test_delivering_frees_capacity_to_mint(desk: Desk, market: Market) -> None:
    serving = provider(desk, market.issuer)
    desk.ok(ApproveIssuer(market.issuer, COMPUTE, 5_000))
    desk.assert_refused(Mint(market.issuer, COMPUTE, 1), "over_capacity")
    desk.ok(Redeem(market.bob, COMPUTE, 3))
    held = desk.ok(Reserve(market.bob, COMPUTE, 3 * LOT))
    desk.ok(Settle(held.id, [Attempt(serving.id, "ok", LOT, 2 * LOT - 1)]))
    desk.ok(Mint(market.issuer, COMPUTE, 2))  # two whole lots delivered: two lots of capacity again
    desk.assert_refused(Mint(market.issuer, COMPUTE, 1), "over_capacity")


def test_calls_are_shared_in_proportion_to_what_each_provider_owes(desk: Desk, market: Market) -> None:
    other = desk.ok(CreateAccount("other-issuer", "issuer")).id
    desk.ok(ApproveIssuer(other, COMPUTE, 20_000))
    desk.ok(Mint(other, COMPUTE, 15_000))  # three times the issuer's 5,000
    first, second = provider(desk, market.issuer), provider(desk, other)
    owed = {p.id: delivery.obligation(desk.engine, desk.engine.delivery.providers[p.id]) for p in (first, second)}
    assert owed == {first.id: 5_000 * LOT, second.id: 15_000 * LOT}
    instrument = desk.engine.instruments[COMPUTE]
    chosen = Counter(delivery.allocate(desk.engine, instrument, seed)[0].id for seed in range(1, 4_001))
    assert abs(chosen[second.id] - 3_000) <= 20 and chosen[first.id] + chosen[second.id] == 4_000
    order = delivery.allocate(desk.engine, instrument, 7)
    assert sorted(p.id for p in order) == [first.id, second.id]


def test_failures_and_slow_answers_lower_the_measured_quality(desk: Desk, market: Market) -> None:
    serving = provider(desk, market.issuer)
    instrument = desk.engine.instruments[COMPUTE]
    assert delivery.quality(desk.engine, instrument) == 90
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    for n in range(10):
        held = desk.ok(Reserve(market.bob, COMPUTE, 10))
        status = "failed" if n == 0 else "ok"
        desk.ok(Settle(held.id, [Attempt(serving.id, status, 2, 8, 2_000_000, 4_000_000)]))
    figures = desk.engine.delivery.effect(instrument.id)
    assert (figures.attempts, figures.success_ppm, figures.ttft_us, figures.tokens_per_second) == (
        10, 900_000, 2_000_000, 2)
    assert delivery.quality(desk.engine, instrument) == 90 * 9 // 10 * 1 // 2


def test_a_group_call_picks_its_instrument_by_mode(desk: Desk, market: Market) -> None:
    engine = desk.engine
    desk.ok(ListInstrument("CHEAP", "compute", tick=TICK, model="cheap", substitution_group="chat-general",
                           quality=50, tokens_per_lot=LOT))
    desk.ok(ApproveIssuer(market.issuer, "CHEAP", 1_000))
    desk.ok(Mint(market.issuer, "CHEAP", 100))
    desk.ok(PlaceOrder(market.issuer, "CHEAP", "sell", price=50 * TICK, qty=10))
    desk.ok(PlaceOrder(market.bob, "CHEAP", "buy", price=50 * TICK, qty=10))
    desk.ok(PlaceOrder(market.issuer, "CHEAP", "sell", price=60 * TICK, qty=10))
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=110 * TICK, qty=10))
    desk.ok(RegisterProvider(market.issuer, "CHEAP", "http://x/v1", "cheap", b""))
    provider(desk, market.issuer)
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    desk.ok(Redeem(market.bob, "CHEAP", 1))
    assert desk.ok(Reserve(market.bob, "chat-general", 10, "cost")).symbol == "CHEAP"
    assert desk.ok(Reserve(market.bob, "chat-general", 10, "quality")).symbol == COMPUTE
    # 0.60 per 50 points is 0.012 a point; 1.10 per 90 points 0.0122: CHEAP still, barely.
    assert desk.ok(Reserve(market.bob, "chat-general", 10, "balance")).symbol == "CHEAP"
    before = engine_state(engine)
    desk.assert_refused(Reserve(market.bob, "chat-general", 2 * LOT, "cost"), "quota_exceeded")
    assert engine_state(engine) == before


def test_routed_orders_in_quality_mode_rank_books_by_measured_quality(desk: Desk, market: Market) -> None:
    desk.ok(ListInstrument("STEADY", "compute", tick=TICK, model="steady", substitution_group="chat-general",
                           quality=80, tokens_per_lot=LOT))
    desk.ok(ApproveIssuer(market.issuer, "STEADY", 1_000))
    desk.ok(Mint(market.issuer, "STEADY", 100))
    for symbol in (COMPUTE, "STEADY"):
        desk.ok(PlaceOrder(market.issuer, symbol, "sell", price=200 * TICK, qty=10))

    def first_leg() -> str:
        routed = desk.ok(RouteOrder(market.alice, "chat-general", "buy", 1, "quality", price=200 * TICK))
        assert isinstance(routed, RoutedOrder)
        return routed.children[0].symbol

    assert first_leg() == COMPUTE  # listed 90 against 80
    serving = provider(desk, market.issuer)
    desk.ok(Redeem(market.bob, COMPUTE, 1))
    for _ in range(4):  # one answer in two: measured 45
        for status in ("ok", "failed"):
            held = desk.ok(Reserve(market.bob, COMPUTE, 10))
            desk.ok(Settle(held.id, [Attempt(serving.id, status, 1, 1, 1_000, 2_000)]))
    assert delivery.quality(desk.engine, desk.engine.instruments[COMPUTE]) == 45
    assert first_leg() == "STEADY"
