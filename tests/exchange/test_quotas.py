"""Quotas (``exchange.quotas``) on their own: grants by source, the soonest-expiring quota reserved first, settling,
expiring reservations and lapsing quotas, and the rows each change leaves to commit."""

from datetime import timedelta

import pytest

from exchange.quotas import Quotas
from exchange.settlement import Ids, Settlement
from tests.support.engine import AT

ACCOUNT, INSTRUMENT = 101, 1
DEADLINE = AT + timedelta(minutes=10)


@pytest.fixture
def quotas() -> Quotas:
    return Quotas(Settlement(Ids()))


def test_grants_add_up_per_source_and_each_is_a_row_to_commit(quotas: Quotas) -> None:
    quotas.grant(ACCOUNT, INSTRUMENT, "redemption", 1_000, AT)
    quotas.grant(ACCOUNT, INSTRUMENT, "redemption", 500, AT)
    month = quotas.grant(ACCOUNT, INSTRUMENT, "package:7", 300, AT, expires_at=AT + timedelta(days=30))
    assert [(q.source, q.granted, q.free) for q in quotas.of(ACCOUNT, INSTRUMENT)] == [
        ("redemption", 1_500, 1_500), ("package:7", 300, 300)]
    assert quotas.free(ACCOUNT, INSTRUMENT, AT) == 1_800 and quotas.largest(ACCOUNT, INSTRUMENT, AT) == 1_500
    assert set(quotas.settlement.effects.quotas) == {(ACCOUNT, INSTRUMENT, "redemption"), (ACCOUNT, INSTRUMENT,
                                                                                          "package:7")}
    assert month.expires_at == AT + timedelta(days=30)
    for tokens, source in ((0, "redemption"), (10, ""), (10, "x" * 65)):
        with pytest.raises(ValueError):
            quotas.grant(ACCOUNT, INSTRUMENT, source, tokens, AT)


def test_a_call_reserves_from_the_quota_that_expires_soonest_and_covers_it(quotas: Quotas) -> None:
    quotas.grant(ACCOUNT, INSTRUMENT, "redemption", 1_000, AT)
    quotas.grant(ACCOUNT, INSTRUMENT, "package:1", 200, AT, expires_at=AT + timedelta(days=2))
    quotas.grant(ACCOUNT, INSTRUMENT, "package:2", 200, AT, expires_at=AT + timedelta(days=1))
    assert quotas.reserve(ACCOUNT, INSTRUMENT, 150, 1, DEADLINE, AT).source == "package:2"
    assert quotas.reserve(ACCOUNT, INSTRUMENT, 150, 2, DEADLINE, AT).source == "package:1"
    assert quotas.reserve(ACCOUNT, INSTRUMENT, 150, 3, DEADLINE, AT).source == "redemption"
    assert quotas.reserve(ACCOUNT, INSTRUMENT, 1_001, 4, DEADLINE, AT) is None
    assert sorted(quotas.open) == [1, 2, 3]


def test_settling_charges_at_most_the_reservation_and_frees_the_rest(quotas: Quotas) -> None:
    quota = quotas.grant(ACCOUNT, INSTRUMENT, "redemption", 1_000, AT)
    first = quotas.reserve(ACCOUNT, INSTRUMENT, 300, 1, DEADLINE, AT)
    second = quotas.reserve(ACCOUNT, INSTRUMENT, 300, 2, DEADLINE, AT)
    assert (quota.reserved, quota.free) == (600, 400)
    assert quotas.settle(first, 120, AT) == 120
    assert quotas.settle(second, 900, AT) == 300
    assert (quota.reserved, quota.used, quota.free) == (0, 420, 580)
    assert (first.status, first.used, second.used) == ("settled", 120, 300)
    assert quotas.open == {} and set(quotas.settlement.effects.reservations) == {1, 2}


def test_an_expired_reservation_charges_nothing(quotas: Quotas) -> None:
    quota = quotas.grant(ACCOUNT, INSTRUMENT, "redemption", 1_000, AT)
    held = quotas.reserve(ACCOUNT, INSTRUMENT, 300, 1, DEADLINE, AT)
    quotas.expire(held, DEADLINE)
    assert (held.status, held.used, quota.reserved, quota.used, quota.free) == ("expired", 0, 0, 0, 1_000)


def test_a_quota_lapses_at_its_end_and_so_does_what_comes_back_to_it_later(quotas: Quotas) -> None:
    end = AT + timedelta(days=30)
    quota = quotas.grant(ACCOUNT, INSTRUMENT, "package:1", 1_000, AT, expires_at=end)
    held = quotas.reserve(ACCOUNT, INSTRUMENT, 400, 1, DEADLINE, AT)
    quotas.lapse(end - timedelta(seconds=1))
    assert quota.lapsed == 0
    quotas.lapse(end)
    assert (quota.lapsed, quota.free, quota.reserved) == (600, 0, 400)
    assert quotas.reserve(ACCOUNT, INSTRUMENT, 1, 2, DEADLINE, end) is None  # an ended quota reserves nothing
    quotas.settle(held, 100, end)
    assert (quota.used, quota.lapsed, quota.free, quota.reserved) == (100, 900, 0, 0)
