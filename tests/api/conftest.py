"""Fixtures for the API tests, on the real server of ``tests.support.api_server``.

    live          module (tests/conftest.py): a server on a new database with the first admin; ``live.url``...
    admin         function: an api.client.Client signed with the admin key
    new_account   function: an async factory making an account (with cash and a key) and its client
    market        function: a fresh compute instrument and an issuer holding 1,000 lots of it

Rate limits are off unless a test builds its own server.
"""

import pytest

from api.client import Client
from tests.support.api_server import Live, unique


@pytest.fixture
async def admin(live: Live):
    async with Client(live.url, live.admin_key, live.admin_secret) as client:
        yield client


@pytest.fixture
async def new_account(admin: Client):
    """``await new_account(role="trader", cash="1000", tokens={"SYM": 10})`` -> (account, client)."""
    clients: list[Client] = []

    async def make(role: str = "trader", cash: str | None = None, scopes: list[str] | None = None,
                   name: str | None = None) -> tuple[dict, Client]:
        account = await admin.create_account(name or unique(role), role)
        if cash is not None:
            await admin.deposit(account["id"], cash)
        default = {"trader": ["read", "trade"], "issuer": ["read", "trade", "issue"], "admin": ["read", "admin"]}
        key = await admin.create_key(account["id"], scopes or default[role])
        client = admin.with_key(key["id"], key["secret"])
        clients.append(client)
        return account, client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def market(admin: Client, new_account):
    """A fresh compute instrument (tick 0.01 CNY) and an issuer holding 1,000 lots of it: (symbol, issuer)."""
    symbol = unique("T").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="test-model",
                                  substitution_group="chat-general", quality=80, tokens_per_lot=1_000_000)
    account, issuer = await new_account("issuer", cash="1000")
    await admin.approve_issuer(account["id"], symbol, 100_000)
    await issuer.mint(symbol, 1000)
    return symbol, issuer
