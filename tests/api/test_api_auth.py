"""Signed requests, scopes, keys and the walls between accounts, over real HTTP."""

import time

import asyncpg
import httpx
import pytest

from api.client import ApiError, Client, Signer
from api.keys import derive_secret
from api.signing import signature


async def status_and_code(client: Client, method: str, path: str, **options) -> tuple[int, str]:
    response = await client.request(method, path, **options)
    return response.status_code, response.json().get("code") if response.content else ""


async def test_missing_bad_and_stale_signatures_are_401(live, new_account):
    _, trader = await new_account(cash="10")
    key = (await trader.keys())[0]["id"]
    async with Client(live.url) as anonymous:
        response = await anonymous.request("GET", "/v1/balances")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unauthenticated"

    async with httpx.AsyncClient(base_url=live.url, auth=Signer(key, "0" * 64)) as wrong_secret:
        response = await wrong_secret.get("/v1/balances")
        assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
    async with httpx.AsyncClient(base_url=live.url, auth=Signer("tk_0123456789abcdef", "0" * 64)) as unknown:
        assert (await unknown.get("/v1/balances")).json()["code"] == "invalid_signature"

    secret = trader.http.auth.secret
    stale = Signer(key, secret, clock=lambda: time.time() - 31)
    async with httpx.AsyncClient(base_url=live.url, auth=stale) as late:
        response = await late.get("/v1/balances")
        assert (response.status_code, response.json()["code"]) == (401, "stale_timestamp")
    early = Signer(key, secret, clock=lambda: time.time() + 31)
    async with httpx.AsyncClient(base_url=live.url, auth=early) as ahead:
        assert (await ahead.get("/v1/balances")).status_code == 401


async def test_the_signature_covers_method_path_query_and_body(live, new_account):
    _, trader = await new_account(cash="10")
    key = (await trader.keys())[0]["id"]
    secret = trader.http.auth.secret

    async def send(method: str, signed_target: str, sent_target: str, signed_body: bytes, sent_body: bytes,
                   signed_method: str | None = None) -> int:
        timestamp = str(int(time.time()))
        headers = {"TOKEX-KEY": key, "TOKEX-TIMESTAMP": timestamp, "Content-Type": "application/json",
                   "TOKEX-SIGNATURE": signature(secret, timestamp, signed_method or method, signed_target,
                                                signed_body)}
        async with httpx.AsyncClient(base_url=live.url) as http:
            return (await http.request(method, sent_target, content=sent_body, headers=headers)).status_code

    assert await send("GET", "/v1/orders?limit=5", "/v1/orders?limit=5", b"", b"") == 200
    assert await send("GET", "/v1/orders?limit=5", "/v1/orders?limit=6", b"", b"") == 401
    assert await send("GET", "/v1/orders", "/v1/balances", b"", b"") == 401
    assert await send("DELETE", "/v1/orders?symbol=X", "/v1/orders?symbol=X", b"", b"", "GET") == 401
    body = b'{"type": "limit", "symbol": "NOPE", "side": "buy", "price": "1", "qty": 1}'
    assert await send("POST", "/v1/orders", "/v1/orders", body, body) == 404  # signed: reaches the engine
    tampered = body.replace(b'"qty": 1', b'"qty": 2')
    assert await send("POST", "/v1/orders", "/v1/orders", body, tampered) == 401


async def test_scopes_are_enforced(live, new_account):
    _, reader = await new_account(scopes=["read"])
    order = {"type": "limit", "symbol": "X", "side": "buy"}
    assert await status_and_code(reader, "POST", "/v1/orders", json=order) == (403, "insufficient_scope")
    _, trader = await new_account()
    assert await status_and_code(trader, "POST", "/v1/accounts", json={"name": "x", "role": "trader"}) == \
        (403, "insufficient_scope")
    assert await status_and_code(trader, "POST", "/v1/mints", json={"symbol": "X", "qty": 1}) == \
        (403, "insufficient_scope")
    _, trade_only = await new_account(scopes=["trade"])
    assert await status_and_code(trade_only, "GET", "/v1/balances") == (403, "insufficient_scope")


async def test_keys_match_the_role_and_the_secret_is_shown_once(admin, new_account, live):
    account, _ = await new_account()
    with pytest.raises(ApiError) as error:
        await admin.create_key(account["id"], ["read", "admin"])
    assert (error.value.status, error.value.code, error.value.field) == (422, "invalid_scope", "scopes")
    with pytest.raises(ApiError) as error:
        await admin.create_key(10**12, ["read"])
    assert (error.value.status, error.value.code) == (404, "unknown_account")

    created = await admin.create_key(account["id"], ["read"], label="reporting")
    assert created["secret"] and created["scopes"] == ["read"]
    client = admin.with_key(created["id"], created["secret"])
    try:
        listed = [k for k in await client.keys() if k["id"] == created["id"]]
        assert listed and "secret" not in listed[0] and listed[0]["label"] == "reporting"
    finally:
        await client.aclose()


async def test_a_database_dump_cannot_sign(admin, new_account, live):
    _, trader = await new_account()
    key = (await trader.keys())[0]
    conn = await asyncpg.connect(live.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM api_key WHERE id = $1", key["id"])
    finally:
        await conn.close()
    secret = trader.http.auth.secret
    stored = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row.values())
    assert secret.encode() not in stored
    assert derive_secret(live.master_key, row["id"], row["salt"]) == secret
    assert derive_secret(b"\0" * 32, row["id"], row["salt"]) != secret


async def test_revoked_keys_stop_working(admin, new_account):
    account, trader = await new_account()
    spare = await admin.create_key(account["id"], ["read"])
    other = admin.with_key(spare["id"], spare["secret"])
    try:
        assert (await other.me())["id"] == account["id"]
        # Revoking is an admin's: a trading key may not, a read key neither (tests/security/test_bounds.py).
        assert await status_and_code(trader, "DELETE", f"/v1/keys/{spare['id']}") == (403, "insufficient_scope")
        revoked = await admin.revoke_key(spare["id"])
        assert revoked["revoked_at"] is not None
        assert await status_and_code(other, "GET", "/v1/accounts/me") == (401, "invalid_signature")
        # Revoking again changes nothing.
        assert (await admin.revoke_key(spare["id"]))["revoked_at"] == revoked["revoked_at"]
    finally:
        await other.aclose()


async def test_an_account_never_sees_or_touches_another_accounts_things(market, new_account):
    symbol, _ = market
    alice_account, alice = await new_account(cash="100")
    bob_account, bob = await new_account(cash="5")
    order = await alice.place_order(symbol, "buy", price="1.00", qty=10, client_order_id="alice-1")
    alice_key = (await alice.keys())[0]["id"]

    assert await status_and_code(bob, "GET", f"/v1/orders/{order['id']}") == (404, "unknown_order")
    assert await status_and_code(bob, "GET", "/v1/orders/by-client-id/alice-1") == (404, "unknown_order")
    assert await status_and_code(bob, "DELETE", f"/v1/orders/{order['id']}") == (404, "unknown_order")
    assert await status_and_code(bob, "PATCH", f"/v1/orders/{order['id']}", json={"qty": 1}) == \
        (404, "unknown_order")
    assert await bob.cancel_all(symbol) == []
    assert await status_and_code(bob, "DELETE", f"/v1/keys/{alice_key}") == (403, "insufficient_scope")
    assert (await bob.orders())["items"] == []
    assert all(k["account_id"] == bob_account["id"] for k in await bob.keys())
    assert (await bob.balances())["CNY"]["available"] == "5"
    assert (await bob.ledger())["items"][0]["postings"] == [{"asset": "CNY", "bucket": "available", "amount": "5"}]
    # Nothing in the body can name another account for trading.
    forged = {"type": "limit", "symbol": symbol, "side": "sell", "price": "1", "qty": 1,
              "account_id": alice_account["id"]}
    assert await status_and_code(bob, "POST", "/v1/orders", json=forged) == (422, "unknown_field")

    still = await alice.order(order["id"])
    assert still["status"] == "open" and still["qty"] == 10
    assert (await alice.keys())[0]["revoked_at"] is None


def test_bootstrapping_the_admin_is_idempotent_by_name(live):
    from api.bootstrap import create_admin

    services = live.app.state.services
    again = live.run(create_admin(services.pool, sequencer=services.sequencer, master_key=live.master_key))
    assert again[0] == live.admin_id
    assert again[1] != live.admin_key and again[2] != live.admin_secret
