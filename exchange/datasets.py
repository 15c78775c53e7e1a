"""Dataset tokens deliver data: license terms, the access grants redemptions make, and metered downloads.

Terms
-----
A dataset's license is structured: the uses it permits (``PERMITTED_USES``), whether the data may be
redistributed, the credit line a user must show (if any), the full text, and what one redeemed token grants:
``days_per_token`` days of access, ``downloads_per_token`` downloads, or both (then the downloads must be used
within the days). Its issuer publishes the terms (``PublishTerms``); each publication is a new version, and the
newest applies to redemptions from then on. Earlier versions stay, with the grants made under them.

Grants
------
Redeeming dataset tokens names the terms version the holder read (``Redeem.terms_version``): redeeming accepts
it, and is refused when it is not the current one, so nobody accepts terms they were not shown. The redemption
makes one grant, under that version, with the same id: ``qty x days_per_token`` days from the redemption and
``qty x downloads_per_token`` downloads. A grant is ledger-checked state: ``exchange.invariants`` recomputes it
from its redemption and terms, and its downloads from the download rows.

Downloads
---------
``Download`` counts one download of a dataset's file when it starts, against a grant of the account that is
usable at the engine's clock: one without a download limit if there is one (it spends nothing), else the one
with a limit that expires first, which spends one download. The file's bytes never pass through here
(``exchange.dataset_files``); the API checks the file belongs to the dataset before it asks.
"""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from exchange.checks import MAX_BIGINT, positive_int, storable
from exchange.commands import Done, Download, PublishTerms, Redeem
from exchange.records import Instrument, Row

if TYPE_CHECKING:
    from exchange.engine import Engine

PERMITTED_USES = ("research", "internal", "commercial", "model_training")
MAX_DAYS_PER_TOKEN = 36_600
MAX_DOWNLOADS_PER_TOKEN = 1_000_000
MAX_TEXT = 32_000
"""Characters of a license's text."""
MAX_ATTRIBUTION = 500
LAST_DAY = datetime(9999, 1, 1, tzinfo=UTC)
"""No grant lasts beyond this: datetime, and so the engine's clock arithmetic, ends in the year 9999."""


class Terms(Row):
    """A row of ``dataset_terms``."""

    instrument_id: int
    version: int
    permitted_use: list[str]
    redistribution: bool
    attribution: str | None
    days_per_token: int | None
    downloads_per_token: int | None
    text: str
    created_at: datetime


class Grant(Row):
    """A row of ``dataset_grant``: what one redemption of dataset tokens gives access to."""

    id: int
    account_id: int
    instrument_id: int
    terms_version: int
    expires_at: datetime | None
    downloads: int | None
    downloads_used: int
    created_at: datetime

    def usable(self, at: datetime) -> bool:
        """Whether a download may start under this grant at ``at``."""
        return ((self.expires_at is None or at < self.expires_at)
                and (self.downloads is None or self.downloads_used < self.downloads))


class Datasets:
    """The current terms of every dataset and the grants still usable, by holder and dataset."""

    def __init__(self) -> None:
        self.terms: dict[int, Terms] = {}
        """Instrument id -> its newest terms."""
        self.grants: dict[tuple[int, int], list[Grant]] = {}
        """(account id, instrument id) -> grants that were usable when last looked at."""

    def add_grant(self, grant: Grant) -> None:
        self.grants.setdefault((grant.account_id, grant.instrument_id), []).append(grant)

    def usable_grants(self, account_id: int, instrument_id: int, at: datetime) -> list[Grant]:
        """The account's grants on the dataset usable at ``at``; forgets those that no longer are (for good:
        the clock only moves forward, and a download count only grows)."""
        key = (account_id, instrument_id)
        grants = [grant for grant in self.grants.get(key, ()) if grant.usable(at)]
        if grants:
            self.grants[key] = grants
        else:
            self.grants.pop(key, None)
        return grants


def publish_terms(engine: "Engine", cmd: PublishTerms, at: datetime) -> Done | str:
    """A new version of a dataset's terms, by its issuer; the answer names the version, a refusal is its code."""
    instrument = engine.instruments.get(cmd.symbol)
    if instrument is None:
        return "unknown_instrument"
    if instrument.kind != "dataset":
        return "not_a_dataset"
    if instrument.issuer_id != cmd.account_id:
        return "not_permitted"
    if not _valid_terms(cmd):
        return "invalid_terms"
    current = engine.datasets.terms.get(instrument.id)
    terms = Terms(instrument.id, 1 if current is None else current.version + 1, list(cmd.permitted_use),
                  cmd.redistribution, cmd.attribution, cmd.days_per_token, cmd.downloads_per_token, cmd.text, at)
    engine.datasets.terms[instrument.id] = terms
    engine.effects.terms.append(terms)
    return Done(terms.version)


def _valid_terms(cmd: PublishTerms) -> bool:
    uses = cmd.permitted_use
    if not (type(uses) is tuple and uses and len(set(uses)) == len(uses) and set(uses) <= set(PERMITTED_USES)):
        return False
    if type(cmd.redistribution) is not bool or (cmd.days_per_token is None and cmd.downloads_per_token is None):
        return False
    if cmd.days_per_token is not None and not (positive_int(cmd.days_per_token)
                                               and cmd.days_per_token <= MAX_DAYS_PER_TOKEN):
        return False
    if cmd.downloads_per_token is not None and not (positive_int(cmd.downloads_per_token)
                                                    and cmd.downloads_per_token <= MAX_DOWNLOADS_PER_TOKEN):
        return False
    if cmd.attribution is not None and not (type(cmd.attribution) is str
                                            and 0 < len(cmd.attribution) <= MAX_ATTRIBUTION):
        return False
    return type(cmd.text) is str and 0 < len(cmd.text) <= MAX_TEXT and storable(cmd.text, cmd.attribution)


def redemption_refusal(engine: "Engine", cmd: Redeem, instrument: Instrument, at: datetime) -> str | None:
    """Why a redemption of ``instrument`` cannot accept its terms and make its grant; None when it can."""
    if instrument.kind != "dataset":
        return None if cmd.terms_version is None else "not_a_dataset"
    terms = engine.datasets.terms.get(instrument.id)
    if terms is None:
        return "no_terms"
    if cmd.terms_version is None:
        return "terms_not_accepted"
    if cmd.terms_version != terms.version:
        return "terms_changed"
    if terms.days_per_token is not None and cmd.qty * terms.days_per_token > (LAST_DAY - at).days:
        return "grant_too_large"
    if terms.downloads_per_token is not None and cmd.qty * terms.downloads_per_token > MAX_BIGINT:
        return "grant_too_large"
    return None


def grant(engine: "Engine", redemption_id: int, account_id: int, instrument: Instrument, qty: int,
          at: datetime) -> Grant:
    """Make the grant of a redemption that ``redemption_refusal`` let through."""
    terms = engine.datasets.terms[instrument.id]
    made = Grant(
        redemption_id, account_id, instrument.id, terms.version,
        None if terms.days_per_token is None else at + timedelta(days=qty * terms.days_per_token),
        None if terms.downloads_per_token is None else qty * terms.downloads_per_token, 0, at,
    )
    engine.datasets.add_grant(made)
    engine.effects.grants[made.id] = made
    return made


def download(engine: "Engine", cmd: Download, at: datetime) -> Done | str:
    """Count one download under a usable grant; the answer names the download."""
    if cmd.account_id not in engine.accounts:
        return "unknown_account"
    instrument = engine.instruments.get(cmd.symbol)
    if instrument is None:
        return "unknown_instrument"
    if instrument.kind != "dataset":
        return "not_a_dataset"
    if not (positive_int(cmd.file_id) and type(cmd.bytes) is int and 0 <= cmd.bytes <= MAX_BIGINT):
        return "unknown_file"
    grants = engine.datasets.usable_grants(cmd.account_id, instrument.id, at)
    if not grants:
        return "no_access"
    unlimited = [g for g in grants if g.downloads is None]
    # Spend nothing when a grant allows any number of downloads; else the limited grant that expires first.
    chosen = unlimited[0] if unlimited else min(grants, key=lambda g: (g.expires_at or LAST_DAY, g.id))
    if chosen.downloads is not None:
        chosen.downloads_used += 1
        engine.effects.grants[chosen.id] = chosen
    download_id = engine.ids.download
    engine.ids.download += 1
    engine.effects.downloads.append((download_id, chosen.id, cmd.file_id, cmd.bytes, at))
    return Done(download_id)
