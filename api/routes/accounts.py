"""Accounts, their balances and ledger, and the cash an admin moves in and out."""

from datetime import datetime
from typing import Literal

from msgspec import Struct

from api import schemas
from api.endpoints import Call, Endpoints, id_page, money
from api.problems import known
from api.routes.reads import movement
from exchange.commands import CreateAccount, Deposit, Withdraw
from exchange.database.queries import sql


class NewAccount(schemas.Request):
    name: schemas.Name
    role: schemas.Role


class CashTransfer(schemas.Request):
    """A deposit or a withdrawal of CNY for an account."""

    account_id: schemas.Id
    amount: schemas.Decimal
    client_request_id: schemas.ClientRequestId | None = None
    """Unique per account credited or debited, and per kind (deposit, withdrawal)."""


class LedgerQuery(schemas.Request):
    asset: schemas.Asset | None = None
    limit: schemas.Limit = 100
    cursor: schemas.Cursor | None = None


class Account(Struct):
    id: int
    name: str
    role: schemas.Role
    created_at: datetime


class BalanceList(Struct):
    items: list[schemas.Balance]


class Posting(Struct):
    asset: str
    bucket: Literal["available", "held"]
    amount: str


class LedgerEntry(Struct):
    id: int
    kind: str
    order_id: int | None
    fill_id: int | None
    created_at: datetime
    postings: list[Posting]
    """This account's postings only; the other side of the entry is not shown."""


class LedgerPage(Struct):
    items: list[LedgerEntry]
    next_cursor: str | None


accounts = Endpoints("accounts")

ACCOUNT = sql("account_by_id")
BALANCES = sql("account_balances")
LEDGER = sql("ledger_entries")


async def read_account(call: Call, account_id: int) -> Account:
    async with call.services.connection() as conn:
        row = await conn.fetchrow(ACCOUNT, account_id)
    return Account(**known(row, "unknown_account"))


@accounts.route("POST", "/v1/accounts", summary="Create an account", scope="admin", body=NewAccount,
                response=Account, status=201, errors=("name_taken",))
async def create_account(call: Call) -> Account:
    """Create an admin, issuer or trader account; give it keys with POST /v1/keys."""
    done = await call.submit(CreateAccount(call.body.name, call.body.role))
    return await read_account(call, done.id)


@accounts.route("GET", "/v1/accounts/me", summary="The key's own account", scope="read", response=Account)
async def me(call: Call) -> Account:
    """The account the signing key belongs to."""
    return await read_account(call, call.account_id)


@accounts.route("GET", "/v1/balances", summary="Own balances", scope="read", response=BalanceList)
async def balances(call: Call) -> BalanceList:
    """Available and held amounts per asset: CNY in yuan, tokens in lots. Held is what open orders reserve."""
    async with call.services.read_connection() as conn:
        rows = await conn.fetch(BALANCES, call.account_id)
    return BalanceList([
        schemas.Balance(asset, schemas.asset_amount(asset, available), schemas.asset_amount(asset, held))
        for asset, available, held in rows
    ])


@accounts.route("GET", "/v1/ledger", summary="Own ledger entries", scope="read", query=LedgerQuery,
                response=LedgerPage, errors=("invalid_cursor",))
async def ledger(call: Call) -> LedgerPage:
    """Journal entries that moved this account's balances, newest first, with this account's postings."""
    rows, next_cursor = await id_page(call, LEDGER, call.account_id, call.query.asset, replica=True)
    return LedgerPage([
        LedgerEntry(row["id"], row["kind"], row["order_id"], row["fill_id"], row["created_at"], [
            Posting(asset, bucket, schemas.asset_amount(asset, amount))
            for asset, bucket, amount in zip(row["assets"], row["buckets"], row["amounts"], strict=True)
        ])
        for row in rows
    ], next_cursor)


@accounts.route("POST", "/v1/deposits", summary="Credit cash", scope="admin", body=CashTransfer,
                response=schemas.Movement, status=201, errors=("unknown_account", "invalid_amount"))
async def deposit(call: Call) -> schemas.Movement:
    """Credit CNY to an account (money that arrived from outside the exchange). Sending a
    ``client_request_id`` again returns the original deposit and changes nothing."""
    return await transfer(call, Deposit)


@accounts.route("POST", "/v1/withdrawals", summary="Debit cash", scope="admin", body=CashTransfer,
                response=schemas.Movement, status=201,
                errors=("unknown_account", "invalid_amount", "insufficient_funds"))
async def withdraw(call: Call) -> schemas.Movement:
    """Debit CNY from an account's available balance (money paid out of the exchange). Sending a
    ``client_request_id`` again returns the original withdrawal and changes nothing."""
    return await transfer(call, Withdraw)


async def transfer(call: Call, command: type[Deposit | Withdraw]) -> schemas.Movement:
    body: CashTransfer = call.body
    amount = money(body.amount, "amount", schemas.MAX_AMOUNT)
    done = await call.submit(command(body.account_id, amount, body.client_request_id))
    return await movement(call, body.account_id, done.id)
