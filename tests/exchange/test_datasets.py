"""Dataset terms, grants and downloads in the engine, in memory, at chosen instants of the engine's clock."""

from datetime import timedelta

from exchange.commands import Command, Done, Download, Mint, PublishTerms, Redeem, Result
from exchange.datasets import LAST_DAY
from exchange.sequencer import EPOCH
from tests.support.engine import AT, COMPUTE, DATASET, Desk, Market

FILE = 7
"""A file id: the engine trusts the API to have found the file; the database's key checks it."""


def terms(issuer: int, days: int | None = None, downloads: int | None = None) -> PublishTerms:
    return PublishTerms(issuer, DATASET, ("research", "internal"), False, "Steel QC Ltd.", days, downloads,
                        "Research and internal use only.")


def at(desk: Desk, command: Command, later: timedelta) -> Result:
    """Apply ``command`` ``later`` after the desk's instant, as the sequencer would then."""
    when = AT + later
    result = desk.engine.apply(command, (when - EPOCH) // timedelta(microseconds=1), when)
    desk.engine.take_effects()
    return result


def test_terms_are_the_issuers_to_publish_and_each_publication_is_a_version(desk: Desk, market: Market) -> None:
    desk.assert_refused(terms(market.alice, days=30), "not_permitted")
    desk.assert_refused(terms(market.issuer), "invalid_terms")
    desk.assert_refused(terms(market.issuer, days=0), "invalid_terms")
    desk.assert_refused(PublishTerms(market.issuer, DATASET, ("resale",), False, None, 1, None, "t"), "invalid_terms")
    desk.assert_refused(PublishTerms(market.issuer, COMPUTE, ("research",), False, None, 1, None, "t"),
                        "not_a_dataset")
    assert desk.ok(terms(market.issuer, days=30)) == Done(1)
    assert desk.ok(terms(market.issuer, downloads=2)) == Done(2)
    assert [t.version for t in desk.effects.terms] == [2]


def test_a_redemption_accepts_the_current_terms_and_grants_what_they_say(desk: Desk, market: Market) -> None:
    desk.assert_refused(Redeem(market.issuer, DATASET, 2, terms_version=1), "no_terms")
    desk.ok(terms(market.issuer, days=30, downloads=5))
    desk.assert_refused(Redeem(market.issuer, DATASET, 2), "terms_not_accepted")
    desk.assert_refused(Redeem(market.issuer, DATASET, 2, terms_version=2), "terms_changed")
    desk.assert_refused(Redeem(market.issuer, COMPUTE, 2, terms_version=1), "not_a_dataset")
    done = desk.ok(Redeem(market.issuer, DATASET, 2, terms_version=1))
    [grant] = desk.effects.grants.values()
    assert (grant.id, grant.terms_version, grant.expires_at, grant.downloads, grant.downloads_used) == \
        (done.id, 1, AT + timedelta(days=60), 10, 0)


def test_a_grant_too_long_to_record_is_refused(desk: Desk, market: Market) -> None:
    desk.ok(terms(market.issuer, days=36_600))
    desk.ok(Mint(market.issuer, DATASET, 50))
    assert (LAST_DAY - AT).days < 100 * 36_600
    desk.assert_refused(Redeem(market.issuer, DATASET, 100, terms_version=1), "grant_too_large")
    desk.ok(Redeem(market.issuer, DATASET, 70, terms_version=1))


def test_downloads_spend_the_grant_that_expires_first_and_stop_when_none_is_usable(desk: Desk, market: Market
                                                                                   ) -> None:
    issuer = market.issuer
    download = Download(issuer, DATASET, FILE, 1_000)
    desk.ok(terms(issuer, days=1, downloads=1))
    desk.assert_refused(download, "no_access")
    short = desk.ok(Redeem(issuer, DATASET, 2, terms_version=1)).id  # 2 days, 2 downloads
    desk.ok(terms(issuer, days=10, downloads=1))
    long = desk.ok(Redeem(issuer, DATASET, 2, terms_version=2)).id  # 20 days, 2 downloads
    grants = {g.id: g for g in desk.engine.datasets.usable_grants(issuer, desk.engine.instruments[DATASET].id, AT)}

    assert isinstance(desk.ok(download), Done)
    assert (grants[short].downloads_used, grants[long].downloads_used) == (1, 0)
    assert desk.effects.downloads[0][1:4] == (short, FILE, 1_000)
    # Three days on, the short grant has expired with a download unused: the long one pays.
    assert isinstance(at(desk, download, timedelta(days=3)), Done)
    assert (grants[short].downloads_used, grants[long].downloads_used) == (1, 1)
    assert isinstance(at(desk, download, timedelta(days=3)), Done)
    assert at(desk, download, timedelta(days=3)).code == "no_access"


def test_a_grant_without_a_download_limit_spends_nothing_until_it_expires(desk: Desk, market: Market) -> None:
    issuer = market.issuer
    download = Download(issuer, DATASET, FILE, 1_000)
    desk.ok(terms(issuer, days=1))
    desk.ok(Redeem(issuer, DATASET, 3, terms_version=1))
    for _ in range(5):
        assert isinstance(desk.ok(download), Done)
    assert desk.effects.grants == {}
    assert isinstance(at(desk, download, timedelta(days=3) - timedelta(microseconds=1)), Done)
    assert at(desk, download, timedelta(days=3)).code == "no_access"
