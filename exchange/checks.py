"""The checks a command's values pass before anything changes: what the database's columns can store, and what
a new order must be that its book does not check itself, and who may trade."""

from exchange.commands import PlaceOrder, Rejection
from exchange.records import TRADING_ROLES, Account, Instrument
from exchange.rejections import reject
from matching.types import BUY, GTC, IOC, SELL, TIME_IN_FORCE

MAX_BIGINT = 2**63 - 1
"""The largest amount a PostgreSQL bigint column stores: a row the database would refuse fails its whole batch,
so every number is checked against it before anything changes."""


def positive_int(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_BIGINT


def storable(*texts: str | None) -> bool:
    """Whether PostgreSQL's text type accepts every one of ``texts`` (it refuses the NUL character)."""
    return all(text is None or (type(text) is str and "\x00" not in text) for text in texts)


def check_order(cmd: PlaceOrder, instrument: Instrument) -> Rejection | None:
    """Everything about a new order that the book does not check itself, or that must hold before a hold."""
    if cmd.side not in (BUY, SELL):
        return reject("invalid_side")
    if cmd.type == "limit":
        if cmd.budget is not None:
            return reject("invalid_budget")
        if not positive_int(cmd.price):
            return reject("invalid_price")
        if cmd.price % instrument.tick:
            return reject("off_tick_price")
        if cmd.tif not in TIME_IN_FORCE:
            return reject("invalid_time_in_force")
    elif cmd.type == "market":
        if cmd.price is not None:
            return reject("invalid_price")
        if cmd.post_only or cmd.tif not in (IOC, GTC):
            return reject("invalid_time_in_force")
        if cmd.budget is not None:
            if cmd.side != BUY or cmd.qty is not None or not positive_int(cmd.budget):
                return reject("invalid_budget")
            return None
    else:
        return reject("invalid_order_type")
    if not positive_int(cmd.qty):
        return reject("invalid_qty")
    if cmd.qty < instrument.min_qty:
        return reject("qty_below_minimum")
    if cmd.qty > instrument.max_qty:
        return reject("qty_above_maximum")
    return None


def account_and_instrument(accounts: dict[int, Account], instruments: dict[str, Instrument], account_id: int,
                           symbol: str) -> tuple[Account, Instrument] | str:
    """The account and the instrument a command names; else the code of the one that does not exist."""
    account = accounts.get(account_id)
    if account is None:
        return "unknown_account"
    instrument = instruments.get(symbol)
    if instrument is None:
        return "unknown_instrument"
    return account, instrument


def approved_compute_issuer(accounts: dict[int, Account], instruments: dict[str, Instrument],
                            approvals: dict, account_id: int, symbol: str) -> tuple[Account, Instrument] | str:
    """The account and the compute instrument, when the account is an issuer approved to mint it; else the code of
    why not (providers register and sellers offer subscriptions only for what they may mint)."""
    found = account_and_instrument(accounts, instruments, account_id, symbol)
    if isinstance(found, str):
        return found
    account, instrument = found
    if account.role != "issuer":
        return "not_permitted"
    if instrument.kind != "compute":
        return "not_compute"
    if (account.id, instrument.id) not in approvals:
        return "not_approved"
    return account, instrument


def trading_account(accounts: dict[int, Account], account_id: int) -> Account | Rejection:
    """The account ``account_id`` names, when its role may trade; the rejection otherwise."""
    account = accounts.get(account_id)
    if account is None:
        return reject("unknown_account")
    if account.role not in TRADING_ROLES:
        return reject("not_permitted")
    return account
