"""Quotas: the tokens an account may consume on a compute instrument, per source, reserved call by call.

Model
-----
A quota is one row per (account, instrument, source). ``source`` names where the tokens came from:
``redemption`` (lots redeemed, ``exchange.delivery``), ``subscription:<id>`` (the periods of a seller's
subscription offer, ``exchange.subscriptions``), or any other short name a granting module chooses. A quota may
expire (``expires_at``): from then on what is free of it is lapsed, and so is whatever a reservation on it gives
back later.

    free = granted - reserved - used - lapsed        (never below zero)

Operations, all in memory and recorded for the next commit through the settlement's effects:

- ``grant(account, instrument, source, tokens, at, expires_at=None)`` adds tokens to the row (created if new;
  ``expires_at`` replaces the row's).
- ``reserve(account, instrument, tokens, deadline_at, at)`` holds ``tokens`` from the one live quota that covers
  them all, the one expiring soonest first (quotas without expiry last; ties by source), and returns the
  ``Reservation``; None when no single quota covers them.
- ``settle(reservation, used, at)`` charges ``used`` (at most what was reserved) and frees the rest.
- ``expire(reservation, at)`` frees a reservation whole, charging nothing: its call never settled.
- ``lapse(at)`` lapses what is free of every quota whose ``expires_at`` has come.

Nothing here checks who may do what; callers do (``exchange.delivery`` for calls and redemptions).
"""

from datetime import datetime
from typing import TYPE_CHECKING

from exchange.records import Row

if TYPE_CHECKING:
    from exchange.settlement import Settlement

REDEMPTION_SOURCE = "redemption"
MAX_SOURCE_LENGTH = 64


class Quota(Row):
    """A row of ``quota``: tokens of one instrument for one account, from one source."""

    account_id: int
    instrument_id: int
    source: str
    granted: int
    reserved: int
    used: int
    lapsed: int
    expires_at: datetime | None
    updated_at: datetime

    @property
    def free(self) -> int:
        return self.granted - self.reserved - self.used - self.lapsed

    def live(self, at: datetime) -> bool:
        return self.expires_at is None or self.expires_at > at


class Reservation(Row):
    """A row of ``reservation``: one call's worst case, held from one quota."""

    id: int
    account_id: int
    instrument_id: int
    source: str
    tokens: int
    status: str
    """``open``, then ``settled`` or ``expired``."""
    used: int
    deadline_at: datetime
    created_at: datetime
    closed_at: datetime | None = None


QuotaKey = tuple[int, int, str]
"""(account id, instrument id, source)."""


class Quotas:
    """Every quota and open reservation in memory; changed rows go to the settlement's effects."""

    def __init__(self, settlement: "Settlement") -> None:
        self.settlement = settlement
        self.rows: dict[QuotaKey, Quota] = {}
        self.by_holding: dict[tuple[int, int], list[Quota]] = {}
        """(account id, instrument id) -> its quotas, of every source."""
        self.open: dict[int, Reservation] = {}
        """Open reservations by id."""

    def restore(self, quota: Quota) -> None:
        """Take back a committed quota (recovery)."""
        self.rows[(quota.account_id, quota.instrument_id, quota.source)] = quota
        self.by_holding.setdefault((quota.account_id, quota.instrument_id), []).append(quota)

    def of(self, account_id: int, instrument_id: int) -> list[Quota]:
        """The account's quotas on the instrument, of every source."""
        return self.by_holding.get((account_id, instrument_id), [])

    def free(self, account_id: int, instrument_id: int, at: datetime) -> int:
        """The tokens the account may still reserve on the instrument, over its live quotas."""
        return sum(q.free for q in self.of(account_id, instrument_id) if q.live(at))

    def largest(self, account_id: int, instrument_id: int, at: datetime) -> int:
        """The most one call can reserve on the instrument: the free tokens of its largest live quota."""
        return max((q.free for q in self.of(account_id, instrument_id) if q.live(at)), default=0)

    def grant(self, account_id: int, instrument_id: int, source: str, tokens: int, at: datetime,
              expires_at: datetime | None = None) -> Quota:
        """Add ``tokens`` (positive) to the account's quota from ``source``."""
        if tokens <= 0 or not source or len(source) > MAX_SOURCE_LENGTH:
            raise ValueError(f"a grant needs positive tokens and a source of 1 to {MAX_SOURCE_LENGTH} characters")
        key = (account_id, instrument_id, source)
        quota = self.rows.get(key)
        if quota is None:
            quota = Quota(account_id, instrument_id, source, 0, 0, 0, 0, expires_at, at)
            self.restore(quota)
        quota.granted += tokens
        if expires_at is not None:
            quota.expires_at = expires_at
        self._touch(quota, at)
        return quota

    def reserve(self, account_id: int, instrument_id: int, tokens: int, reservation_id: int, deadline_at: datetime,
                at: datetime) -> Reservation | None:
        """Hold ``tokens`` from one live quota that covers them; None (nothing changed) when none does."""
        covering = [q for q in self.of(account_id, instrument_id) if q.live(at) and q.free >= tokens]
        if not covering:
            return None
        quota = min(covering, key=lambda q: (q.expires_at is None, q.expires_at or at, q.source))
        quota.reserved += tokens
        self._touch(quota, at)
        reservation = Reservation(reservation_id, account_id, instrument_id, quota.source, tokens, "open", 0,
                                  deadline_at, at)
        self.open[reservation.id] = reservation
        self.settlement.effects.reservations[reservation.id] = reservation
        return reservation

    def settle(self, reservation: Reservation, used: int, at: datetime) -> int:
        """Charge ``used`` tokens of an open reservation (at most what it holds) and free the rest; return the
        tokens charged."""
        charged = min(max(used, 0), reservation.tokens)
        self._close(reservation, "settled", charged, at)
        return charged

    def expire(self, reservation: Reservation, at: datetime) -> None:
        """Free an open reservation whole: its call never settled, so nothing is charged."""
        self._close(reservation, "expired", 0, at)

    def lapse(self, at: datetime) -> None:
        """Lapse what is free of every quota that has expired by ``at``."""
        for quota in self.rows.values():
            if not quota.live(at) and quota.free > 0:
                quota.lapsed += quota.free
                self._touch(quota, at)

    def _close(self, reservation: Reservation, status: str, charged: int, at: datetime) -> None:
        quota = self.rows[(reservation.account_id, reservation.instrument_id, reservation.source)]
        quota.reserved -= reservation.tokens
        quota.used += charged
        if not quota.live(at):
            quota.lapsed += reservation.tokens - charged  # given back after its quota ended: it lapses
        self._touch(quota, at)
        reservation.status = status
        reservation.used = charged
        reservation.closed_at = at
        del self.open[reservation.id]
        self.settlement.effects.reservations[reservation.id] = reservation

    def _touch(self, quota: Quota, at: datetime) -> None:
        quota.updated_at = at
        self.settlement.effects.quotas[(quota.account_id, quota.instrument_id, quota.source)] = quota
