"""Delivery: providers and their obligations, quotas from redemptions, and each inference call reserved and settled.

Providers and obligations
-------------------------
An issuer approved for a compute instrument registers one OpenAI-compatible upstream for it (``RegisterProvider``:
base URL, model name, credential encrypted by the API). Its **obligation** is what it minted and has not yet
delivered, in tokens: ``issued lots x tokens_per_lot - delivered``. Delivered tokens count as delivered lots
(whole lots, ``delivered // tokens_per_lot``) against its capacity to mint: delivering frees capacity.

Quotas
------
Redeeming compute lots grants the holder ``lots x tokens_per_lot`` tokens of the instrument, source ``redemption``
(``exchange.quotas``). Other modules grant under sources of their own.

A call
------
``Reserve`` holds the call's worst case (the gateway's bound on prompt plus completion tokens) from one quota that
covers it. ``model`` names an instrument, or a substitution group: then among the group's instruments that have a
provider and a quota covering the call, ``mode`` picks one, with the words of routed orders (key smallest first,
ties by symbol):

- ``cost``: price per 1M tokens (the best ask, per ``tokens_per_lot``; an empty book last);
- ``quality``: the measured quality (below), highest first;
- ``balance``: price per 1M tokens divided by the measured quality.

The answer lists the instrument's providers in the order to try them (``allocate``). ``Settle`` then charges what
the provider that answered reported, at most what was reserved, credits that provider's delivered tokens, and
writes one usage row per attempt (failed attempts charge nothing). A reservation not settled by its deadline
(``RESERVATION_SECONDS``: longer than the gateway can spend on a call) is freed whole by ``ExpireReservations``,
which the period scheduler submits every ``SWEEP_SECONDS`` (``exchange.scheduler``: in the one process, or on the
leading engine of a cluster): a gateway that crashed mid-call leaves no quota held, and the buyer is not charged
for a call whose outcome nobody recorded.

Allocation
----------
Calls are shared among an instrument's providers in proportion to what each still owes. The first provider of a
reservation is chosen by its id: ``id x 2^64/phi mod total owed`` falls in one provider's band of the owed tokens
(providers by id), a low-discrepancy sequence, so over many calls each provider's share follows its obligation,
without randomness or state to rebuild. The others follow, the largest obligation first, for failover. When
nobody owes anything, the providers take turns by reservation id. The gateway moves providers that are failing
(``api.inference``) to the end.

Measured quality
----------------
Each provider's last ``WINDOW_CALLS`` attempts are its window. Over the windows of an instrument's providers:
``success = ok / attempts`` (1 with no attempts) and ``ttft`` the median time to first token of the ok ones. The
instrument's measured quality is ``listed quality x success``, times ``REFERENCE_TTFT_US / ttft`` when the
median first token takes longer than that (one second), rounded down: a provider that fails one call in ten and
answers in two seconds turns quality 90 into 40. Routed orders in ``quality`` and ``balance`` mode rank books by
it too (``exchange.routed_orders``), so "effect priority" is what providers deliver.
"""

from collections import deque
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING

import msgspec

from exchange import route_planner
from exchange.checks import MAX_BIGINT, approved_compute_issuer, positive_int, storable, trading_account
from exchange.commands import (
    Attempt,
    Delivered,
    Done,
    ExpireReservations,
    ProviderView,
    RegisterProvider,
    Rejection,
    ReservationView,
    Reserve,
    Settle,
    SettlementView,
    Upstream,
)
from exchange.quotas import REDEMPTION_SOURCE
from exchange.records import Approval, Instrument, Row

if TYPE_CHECKING:
    from exchange.engine import Engine

RESERVATION_SECONDS = 600
"""How long a reservation may wait for its settlement; the gateway bounds a call well within it."""
WINDOW_CALLS = 100
"""The attempts per provider that its measured figures cover."""
REFERENCE_TTFT_US = 1_000_000
MAX_ATTEMPTS = 8
MAX_URL = 512
MAX_MODEL = 128
MAX_CREDENTIAL = 1024
GOLDEN = 0x9E3779B97F4A7C15
"""2^64 / the golden ratio: successive multiples mod any total spread evenly (``allocate``)."""
STATUSES = ("ok", "failed")


class Provider(Row):
    """A row of ``provider``."""

    id: int
    account_id: int
    instrument_id: int
    base_url: str
    model: str
    credential: bytes
    delivered: int
    created_at: datetime
    updated_at: datetime


class Sample(msgspec.Struct, frozen=True, array_like=True):
    """One attempt in a provider's window."""

    ok: bool
    ttft_us: int
    completion_tokens: int
    latency_us: int


class Effect(msgspec.Struct, frozen=True):
    """Measured figures over a window of attempts."""

    attempts: int
    success_ppm: int
    """Attempts that answered, per million; 1,000,000 when there were none."""
    ttft_us: int | None
    """The median time to first token of the ok attempts."""
    tokens_per_second: int | None
    """Completion tokens per second of the ok attempts (their tokens over their whole latency)."""


def effect(samples: "list[Sample] | deque[Sample]") -> Effect:
    """The measured figures of ``samples``."""
    ok = [s for s in samples if s.ok]
    if not samples:
        return Effect(0, 1_000_000, None, None)
    ttfts = sorted(s.ttft_us for s in ok)
    latency = sum(s.latency_us for s in ok)
    return Effect(len(samples), len(ok) * 1_000_000 // len(samples), ttfts[(len(ttfts) - 1) // 2] if ttfts else None,
                  sum(s.completion_tokens for s in ok) * 1_000_000 // latency if latency else None)


def measured_quality(listed: int, figures: Effect) -> int:
    """``listed`` quality scaled by success and by a first token slower than ``REFERENCE_TTFT_US``."""
    quality = listed * figures.success_ppm // 1_000_000
    if figures.ttft_us is not None and figures.ttft_us > REFERENCE_TTFT_US:
        quality = quality * REFERENCE_TTFT_US // figures.ttft_us
    return quality


class Delivery:
    """Providers by id and by instrument, and each provider's window of recent attempts."""

    def __init__(self) -> None:
        self.providers: dict[int, Provider] = {}
        self.by_holding: dict[tuple[int, int], Provider] = {}
        """(issuer account id, instrument id) -> its provider."""
        self.by_instrument: dict[int, list[Provider]] = {}
        self.windows: dict[int, deque[Sample]] = {}

    def add(self, provider: Provider) -> None:
        self.providers[provider.id] = provider
        self.by_holding[(provider.account_id, provider.instrument_id)] = provider
        self.by_instrument.setdefault(provider.instrument_id, []).append(provider)
        self.windows[provider.id] = deque(maxlen=WINDOW_CALLS)

    def effect(self, instrument_id: int) -> Effect:
        """The measured figures over the windows of the instrument's providers."""
        return effect([s for p in self.by_instrument.get(instrument_id, ()) for s in self.windows[p.id]])


def quality(engine: "Engine", instrument: Instrument) -> int:
    """The instrument's measured quality (``measured_quality`` of its listed one)."""
    assert instrument.quality is not None
    return measured_quality(instrument.quality, engine.delivery.effect(instrument.id))


def obligation(engine: "Engine", provider: Provider) -> int:
    """Tokens the provider minted (minted less burned) and has not delivered; negative when it delivered more."""
    instrument = engine.instruments_by_id[provider.instrument_id]
    approval = engine.approvals[(provider.account_id, provider.instrument_id)]
    assert instrument.tokens_per_lot is not None
    return approval.issued * instrument.tokens_per_lot - provider.delivered


def outstanding(engine: "Engine", approval: Approval) -> int:
    """Lots the issuer minted and has not delivered: what counts against its capacity."""
    provider = engine.delivery.by_holding.get((approval.account_id, approval.instrument_id))
    tokens_per_lot = engine.instruments_by_id[approval.instrument_id].tokens_per_lot
    if provider is None or not tokens_per_lot:
        return approval.issued
    return approval.issued - min(approval.issued, provider.delivered // tokens_per_lot)


def provider_view(engine: "Engine", provider: Provider) -> ProviderView:
    symbol = engine.instruments_by_id[provider.instrument_id].symbol
    return ProviderView(provider.id, provider.account_id, symbol, provider.base_url, provider.model,
                        provider.delivered, obligation(engine, provider), provider.created_at, provider.updated_at)


def redemption_refusal(instrument: Instrument, qty: int) -> str | None:
    """Why redeeming ``qty`` lots of ``instrument`` cannot grant its quota, if it cannot."""
    if instrument.kind == "compute" and qty * (instrument.tokens_per_lot or 0) > MAX_BIGINT:
        return "amount_too_large"
    return None


def redeemed(engine: "Engine", redemption_id: int, account_id: int, instrument: Instrument, qty: int,
             at: datetime) -> None:
    """Grant the quota of ``qty`` compute lots just redeemed, and tell the instrument's providers; dataset tokens
    grant no quota here."""
    if instrument.kind == "compute" and instrument.tokens_per_lot:
        engine.quotas.grant(account_id, instrument.id, REDEMPTION_SOURCE, qty * instrument.tokens_per_lot, at)
        engine.effects.served_redemptions.extend(
            (provider.account_id, provider.id, redemption_id, instrument.symbol, qty, at)
            for provider in engine.delivery.by_instrument.get(instrument.id, ()))


# Handlers (dispatched by the engine)

def register(engine: "Engine", cmd: RegisterProvider, at: datetime) -> ProviderView | str:
    """Register or change the issuer's upstream for an instrument."""
    found = approved_compute_issuer(engine.accounts, engine.instruments, engine.approvals, cmd.account_id, cmd.symbol)
    if isinstance(found, str):
        return found
    account, instrument = found
    if not (type(cmd.base_url) is str and cmd.base_url.startswith(("http://", "https://"))
            and len(cmd.base_url) <= MAX_URL and type(cmd.model) is str and 0 < len(cmd.model) <= MAX_MODEL
            and storable(cmd.base_url, cmd.model) and type(cmd.credential) is bytes
            and len(cmd.credential) <= MAX_CREDENTIAL):
        return "invalid_provider"
    delivery = engine.delivery
    provider = delivery.by_holding.get((account.id, instrument.id))
    if provider is None:
        provider = Provider(engine.ids.provider, account.id, instrument.id, cmd.base_url, cmd.model, cmd.credential,
                            0, at, at)
        engine.ids.provider += 1
        delivery.add(provider)
    else:
        provider.base_url, provider.model, provider.credential = cmd.base_url, cmd.model, cmd.credential
        provider.updated_at = at
    engine.effects.providers[provider.id] = provider
    return provider_view(engine, provider)


def reserve(engine: "Engine", cmd: Reserve, at: datetime) -> ReservationView | Rejection | str:
    """Hold a call's worst case from the buyer's quota; answer the providers to try."""
    account = trading_account(engine.accounts, cmd.account_id)
    if isinstance(account, Rejection):
        return account
    if not positive_int(cmd.tokens):
        return "invalid_tokens"
    if type(cmd.model) is not str:
        return "unknown_model"
    named = engine.instruments.get(cmd.model)
    if named is not None:
        if named.kind != "compute":
            return "not_compute"
        candidates = [named]
    else:
        candidates = [i for i in engine.instruments.values()
                      if i.kind == "compute" and i.substitution_group == cmd.model]
        if not candidates:
            return "unknown_model"
        if cmd.mode not in route_planner.MODES:
            return "invalid_route_mode"
    candidates = [i for i in candidates if engine.delivery.by_instrument.get(i.id)]
    if not candidates:
        return "no_provider"
    quotas = engine.quotas
    covered = [i for i in candidates if quotas.largest(account.id, i.id, at) >= cmd.tokens]
    if not covered:
        return "quota_exceeded"
    instrument = covered[0] if len(covered) == 1 else min(covered, key=lambda i: _rank(engine, i, cmd.mode or "cost"))
    reservation = quotas.reserve(account.id, instrument.id, cmd.tokens, engine.ids.reservation,
                                 at + timedelta(seconds=RESERVATION_SECONDS), at)
    assert reservation is not None, "a covering quota was found"
    engine.ids.reservation += 1
    return ReservationView(reservation.id, account.id, instrument.symbol, reservation.source, reservation.tokens,
                           reservation.deadline_at, [
                               Upstream(p.id, p.base_url, p.model, p.credential)
                               for p in allocate(engine, instrument, reservation.id)])


def _rank(engine: "Engine", instrument: Instrument, mode: str) -> tuple:
    """The key ``mode`` takes instruments by, smallest first (``reserve``)."""
    assert instrument.book is not None and instrument.tokens_per_lot
    asks = instrument.book.depth(1)[1]
    price = Fraction(asks[0][0] * 1_000_000, instrument.tokens_per_lot) if asks else None
    measured = quality(engine, instrument)
    unpriced = price is None
    if mode == "quality":
        return (-measured, unpriced, price or 0, instrument.symbol)
    if mode == "balance":
        return (unpriced or measured == 0, (price or 0) / (measured or 1), instrument.symbol)
    return (unpriced, price or 0, -measured, instrument.symbol)


def allocate(engine: "Engine", instrument: Instrument, seed: int) -> list[Provider]:
    """The instrument's providers in the order to try them for reservation ``seed`` (see Allocation)."""
    providers = sorted(engine.delivery.by_instrument.get(instrument.id, ()), key=lambda p: p.id)
    owed = [max(0, obligation(engine, p)) for p in providers]
    total = sum(owed)
    if total == 0:
        turn = seed % len(providers)
        return providers[turn:] + providers[:turn]
    point = seed * GOLDEN % total
    first = 0
    while point >= owed[first]:
        point -= owed[first]
        first += 1
    rest = sorted((p for i, p in enumerate(providers) if i != first), key=lambda p: (-obligation(engine, p), p.id))
    return [providers[first], *rest]


def settle(engine: "Engine", cmd: Settle, at: datetime) -> SettlementView | str:
    """Charge an open reservation what its call delivered; record each attempt."""
    reservation = engine.quotas.open.get(cmd.reservation_id) if type(cmd.reservation_id) is int else None
    if reservation is None:
        return "unknown_reservation"
    attempts = cmd.attempts
    if not _valid_attempts(engine, attempts, reservation.instrument_id):
        return "invalid_attempts"
    answered = next((a for a in attempts if a.status == "ok"), None)
    reported = 0 if answered is None else answered.prompt_tokens + answered.completion_tokens
    charged = engine.quotas.settle(reservation, reported, at)
    delivery = engine.delivery
    settled: list[Delivered] = []
    for attempt in attempts:
        prompt = completion = 0
        provider = delivery.providers[attempt.provider_id]
        if attempt is answered:
            prompt = min(attempt.prompt_tokens, charged)
            completion = charged - prompt
            provider.delivered += charged
            provider.updated_at = at
            engine.effects.deliveries[provider.id] = provider
        delivery.windows[attempt.provider_id].append(
            Sample(attempt.status == "ok", attempt.ttft_us, completion, attempt.latency_us))
        engine.effects.usages.append((
            engine.ids.usage, reservation.id, reservation.account_id, attempt.provider_id, reservation.instrument_id,
            prompt, completion, attempt.ttft_us, attempt.latency_us, attempt.status, at))
        settled.append(Delivered(provider.id, attempt.status, prompt, completion, attempt.ttft_us, attempt.latency_us,
                                 usage_id=engine.ids.usage, provider_account_id=provider.account_id,
                                 delivered=provider.delivered, obligation=obligation(engine, provider)))
        engine.ids.usage += 1
    symbol = engine.instruments_by_id[reservation.instrument_id].symbol
    view = SettlementView(reservation.id, symbol, charged, settled, at)
    engine.effects.settlements.append(view)
    return view


def _valid_attempts(engine: "Engine", attempts: list[Attempt], instrument_id: int) -> bool:
    if type(attempts) is not list or not 0 < len(attempts) <= MAX_ATTEMPTS:
        return False
    if sum(a.status == "ok" for a in attempts) > 1:
        return False
    for a in attempts:
        provider = engine.delivery.providers.get(a.provider_id) if type(a.provider_id) is int else None
        if provider is None or provider.instrument_id != instrument_id or a.status not in STATUSES:
            return False
        if not all(type(n) is int and 0 <= n <= MAX_BIGINT
                   for n in (a.prompt_tokens, a.completion_tokens, a.ttft_us, a.latency_us)):
            return False
    return True


def expire(engine: "Engine", cmd: ExpireReservations, at: datetime) -> Done:
    """Free the reservations past their deadline, and lapse expired quotas."""
    quotas = engine.quotas
    for reservation in [r for r in quotas.open.values() if r.deadline_at <= at]:
        quotas.expire(reservation, at)
    quotas.lapse(at)
    return Done()
