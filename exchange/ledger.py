"""The double-entry ledger and the balances it keeps in step.

Every movement of cash or tokens is one journal entry made of postings: (account, asset, bucket, amount),
where the bucket is ``available`` or ``held`` and the amounts of one entry sum to zero per asset. Balances
are never changed any other way, so they always reconcile with the postings. System accounts stand for the
world outside the exchange (cash deposited, tokens issued or redeemed) and for the fees collected; they are
the only accounts that may go negative, and the sum of every asset over all accounts is always zero.

The ledger only records: it applies postings to the in-memory balances and queues the rows for the next
commit (``take_rows``). Checking that a movement is affordable is the caller's job, done before posting.
"""

from datetime import datetime
from typing import Final

CASH: Final = "CNY"

EXTERNAL: Final = 1
"""System account: cash deposited into and withdrawn from the exchange."""
ISSUANCE: Final = 2
"""System account: tokens minted and burned."""
REDEMPTION: Final = 3
"""System account: tokens consumed by their holders."""
FEES: Final = 4
"""System account: fees collected."""
SYSTEM_ACCOUNTS: Final = {EXTERNAL: "system:external", ISSUANCE: "system:issuance",
                          REDEMPTION: "system:redemption", FEES: "system:fees"}

AVAILABLE: Final = 0
HELD: Final = 1
BUCKETS: Final = ("available", "held")

Posting = tuple[int, str, int, int]
"""(account id, asset, AVAILABLE or HELD, signed amount)."""


class Ledger:
    """Balances per (account, asset) as ``[available, held]``, and the journal rows not yet committed."""

    def __init__(self, next_entry_id: int = 1) -> None:
        self.balances: dict[tuple[int, str], list[int]] = {}
        self.next_entry_id = next_entry_id
        self.entries: list[tuple] = []
        self.postings: list[tuple] = []
        self.touched: set[tuple[int, str]] = set()

    def available(self, account: int, asset: str) -> int:
        balance = self.balances.get((account, asset))
        return 0 if balance is None else balance[AVAILABLE]

    def held(self, account: int, asset: str) -> int:
        balance = self.balances.get((account, asset))
        return 0 if balance is None else balance[HELD]

    def post(self, kind: str, at: datetime, legs: list[Posting], order_id: int | None = None,
             fill_id: int | None = None) -> int:
        """Apply one journal entry; zero amounts are left out. Return its id."""
        entry_id = self.next_entry_id
        self.next_entry_id += 1
        self.entries.append((entry_id, kind, order_id, fill_id, at))
        balances = self.balances
        postings = self.postings
        touched = self.touched
        for account, asset, bucket, amount in legs:
            if not amount:
                continue
            key = (account, asset)
            balance = balances.get(key)
            if balance is None:
                balance = balances[key] = [0, 0]
            balance[bucket] += amount
            touched.add(key)
            postings.append((entry_id, account, asset, BUCKETS[bucket], amount))
        return entry_id

    def hold(self, account: int, asset: str, amount: int, at: datetime, order_id: int) -> None:
        """Move ``amount`` from available to held for an order."""
        if amount:
            self.post("hold", at, [(account, asset, AVAILABLE, -amount), (account, asset, HELD, amount)], order_id)

    def release(self, account: int, asset: str, amount: int, at: datetime, order_id: int) -> None:
        """Move ``amount`` from held back to available for an order."""
        if amount:
            self.post("release", at, [(account, asset, HELD, -amount), (account, asset, AVAILABLE, amount)],
                      order_id)

    def take_rows(self) -> tuple[list[tuple], list[tuple], list[tuple]]:
        """The entries, postings and (account, asset, available, held, is_system) rows to commit."""
        entries, postings = self.entries, self.postings
        balances = [(account, asset, *self.balances[(account, asset)], account in SYSTEM_ACCOUNTS)
                    for account, asset in self.touched]
        self.entries, self.postings, self.touched = [], [], set()
        return entries, postings, balances
