"""A signed request runs at most once: the same bytes again are refused (or, with a client id, answered with
the original result), also after a restart; client ids make retries safe; a user subscription works on the
connection it was signed for only; requests under unknown keys are throttled by address."""

import json
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from api.client import ApiError, Client
from api.ratelimit import RateLimits
from api.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WINDOW_SECONDS, signature
from exchange.commands import OrderView, PlaceOrder, decode_result
from exchange.rejections import reject
from exchange.replay import REMEMBER_SECONDS, RecentRequests
from tests.support.api_server import Live, live_server
from tests.support.engine import AT, BID, COMPUTE, TS, Desk, open_market
from tests.support.feed import FeedClient, signed_user, ws_url

START_AT = "2031-01-01T00:00:00Z"
"""Packages start far ahead: no period runs during a test."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Signed:
    """One signed request, to be sent as many times as a test likes, byte for byte."""

    method: str
    path: str
    headers: dict[str, str]
    content: bytes

    @classmethod
    def make(cls, key: dict, method: str, path: str, body: dict | None = None, ahead: int = 0) -> "Signed":
        """Sign with ``key`` (``id``, ``secret``); ``ahead`` seconds in the future gives a replay that much longer
        inside the window (a restart takes a while)."""
        content = b"" if body is None else json.dumps(body).encode()
        stamp = str(int(time.time()) + ahead)
        headers = {KEY_HEADER: key["id"], TIMESTAMP_HEADER: stamp,
                   SIGNATURE_HEADER: signature(key["secret"], stamp, method, path, content)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return cls(method, path, headers, content)

    async def send(self, live: Live) -> httpx.Response:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            return await http.request(self.method, self.path, headers=self.headers, content=self.content)


@dataclass
class World:
    """An admin, an issuer of ``symbol`` resting 100 lots at 2 CNY, and a trader with 1,000 CNY, each with a key."""

    admin: Client
    admin_key: dict
    issuer: Client
    issuer_id: int
    issuer_key: dict
    trader: Client
    trader_id: int
    trader_key: dict
    symbol: str

    async def close(self) -> None:
        for client in (self.admin, self.issuer, self.trader):
            await client.aclose()


async def make_world(live: Live) -> World:
    admin = Client(live.url, live.admin_key, live.admin_secret)
    admin_key = {"id": live.admin_key, "secret": live.admin_secret}
    symbol = unique("R").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="test-model",
                                  substitution_group=unique("group"), quality=80, tokens_per_lot=1_000_000)
    issuer_account = await admin.create_account(unique("issuer"), "issuer")
    await admin.approve_issuer(issuer_account["id"], symbol, 100_000)
    issuer_key = await admin.create_key(issuer_account["id"], ["read", "trade", "issue"])
    issuer = admin.with_key(issuer_key["id"], issuer_key["secret"])
    await issuer.mint(symbol, 1000)
    await issuer.place_order(symbol, "sell", price="2", qty=100)
    trader_account = await admin.create_account(unique("trader"), "trader")
    await admin.deposit(trader_account["id"], "1000")
    trader_key = await admin.create_key(trader_account["id"], ["read", "trade"])
    trader = admin.with_key(trader_key["id"], trader_key["secret"])
    return World(admin, admin_key, issuer, issuer_account["id"], issuer_key, trader, trader_account["id"],
                 trader_key, symbol)


async def state(world: World) -> dict:
    """What any of the requests under test could change."""
    group = (await world.admin.call("GET", f"/v1/instruments/{world.symbol}"))["substitution_group"]
    return {
        "issuer": await world.issuer.balances(),
        "trader": await world.trader.balances(),
        "trader_orders": (await world.trader.orders(status="all"))["items"],
        "routed": (await world.trader.call("GET", "/v1/routed-orders"))["items"],
        "packages": await world.trader.packages(),
        "trader_keys": await world.trader.keys(),
        "redemptions": (await world.issuer.redemptions())["items"],
        "group": group,
    }


async def requests(world: World, ahead: int = 0) -> dict[str, Signed]:
    """One signed request per state-changing endpoint, each allowed to succeed once; ``ahead`` as for
    ``Signed.make``."""
    group = (await world.admin.call("GET", f"/v1/instruments/{world.symbol}"))["substitution_group"]
    return {
        "deposit": Signed.make(world.admin_key, "POST", "/v1/deposits",
                               {"account_id": world.trader_id, "amount": "10"}, ahead),
        "withdrawal": Signed.make(world.admin_key, "POST", "/v1/withdrawals",
                                  {"account_id": world.trader_id, "amount": "10"}, ahead),
        "mint": Signed.make(world.issuer_key, "POST", "/v1/mints", {"symbol": world.symbol, "qty": 5}, ahead),
        "burn": Signed.make(world.issuer_key, "POST", "/v1/burns", {"symbol": world.symbol, "qty": 5}, ahead),
        "redemption": Signed.make(world.issuer_key, "POST", "/v1/redemptions", {"symbol": world.symbol, "qty": 5},
                                  ahead),
        "order": Signed.make(world.trader_key, "POST", "/v1/orders",
                             {"symbol": world.symbol, "side": "buy", "type": "limit", "price": "2", "qty": 3}, ahead),
        "key": Signed.make(world.admin_key, "POST", "/v1/keys", {"account_id": world.trader_id, "scopes": ["read"]},
                           ahead),
        "routed order": Signed.make(world.trader_key, "POST", "/v1/routed-orders",
                                    {"group": group, "side": "buy", "qty": 2, "mode": "cost", "price": "2"}, ahead),
        "package": Signed.make(world.trader_key, "POST", "/v1/packages",
                               {"group": group, "qty": 1, "mode": "cost", "period": "week", "max_cost": "5",
                                "start_at": START_AT}, ahead),
    }


ENDPOINTS = ("deposit", "withdrawal", "mint", "burn", "redemption", "order", "key", "routed order", "package")


async def test_the_guard_remembers_longer_than_a_request_can_be_sent_again():
    assert REMEMBER_SECONDS > 2 * WINDOW_SECONDS
    recent = RecentRequests()
    recent.add(b"a", 0, b"A")
    recent.add(b"b", REMEMBER_SECONDS * 1_000_000 - 1, b"B")
    recent.add(b"c", REMEMBER_SECONDS * 1_000_000, b"C")  # a new generation: "a" and "b" are still remembered
    assert b"a" in recent and b"b" in recent and recent.result(b"a") == b"A"
    recent.add(b"d", 2 * REMEMBER_SECONDS * 1_000_000, b"D")
    assert b"a" not in recent and b"c" in recent and b"d" in recent
    assert recent.result(b"a") is None and recent.result(b"c") == b"C"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_same_signed_request_runs_once(live: Live, endpoint: str):
    world = await make_world(live)
    signed = (await requests(world))[endpoint]
    first = await signed.send(live)
    assert first.status_code in (200, 201), first.text
    after_first = await state(world)
    for _ in range(3):
        again = await signed.send(live)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "replayed_request"
    assert await state(world) == after_first
    await world.close()


async def test_a_replayed_key_revocation_is_refused(live: Live):
    world = await make_world(live)
    spare = await world.admin.create_key(world.trader_id, ["read"])
    revoke = Signed.make(world.admin_key, "DELETE", f"/v1/keys/{spare['id']}")
    assert (await revoke.send(live)).status_code == 200
    again = await revoke.send(live)
    assert (again.status_code, again.json()["code"]) == (409, "replayed_request")
    await world.close()


async def test_a_refused_request_stays_spent(live: Live):
    """A withdrawal refused for want of funds must not run when replayed after a deposit."""
    world = await make_world(live)
    withdraw = Signed.make(world.admin_key, "POST", "/v1/withdrawals",
                           {"account_id": world.trader_id, "amount": "1500"})
    refused = await withdraw.send(live)
    assert (refused.status_code, refused.json()["code"]) == (409, "insufficient_funds")
    await world.admin.deposit(world.trader_id, "1000")
    replayed = await withdraw.send(live)
    assert (replayed.status_code, replayed.json()["code"]) == (409, "replayed_request")
    assert (await world.trader.balances())["CNY"]["available"] == "2000"
    await world.close()


async def test_a_new_signature_of_the_same_body_is_a_new_request(live: Live):
    world = await make_world(live)
    body = {"account_id": world.trader_id, "amount": "10"}
    assert (await Signed.make(world.admin_key, "POST", "/v1/deposits", body).send(live)).status_code == 201
    # Another second, another signature: the client meant it twice.
    later = Signed.make(world.admin_key, "POST", "/v1/deposits", body, ahead=1)
    assert (await later.send(live)).status_code == 201
    assert (await world.trader.balances())["CNY"]["available"] == "1020"
    await world.close()


async def test_replays_are_refused_after_a_restart(restartable):
    live = restartable.start()
    world = await make_world(live)
    # Signed ahead, so that the replay is still inside the window after the restart.
    ahead = await requests(world, ahead=WINDOW_SECONDS - 2)
    for name, request in ahead.items():
        assert (await request.send(live)).status_code in (200, 201), name
    before = await state(world)
    await world.close()

    restartable.stop()
    live = restartable.start()
    world = await _reopen(world, live)
    for name, request in ahead.items():
        again = await request.send(live)
        assert (again.status_code, again.json()["code"]) == (409, "replayed_request"), name
    assert await state(world) == before
    await world.close()


async def _reopen(world: World, live: Live) -> World:
    """The same accounts and keys, on the restarted server."""
    admin = Client(live.url, live.admin_key, live.admin_secret)
    return World(admin, world.admin_key, admin.with_key(world.issuer_key["id"], world.issuer_key["secret"]),
                 world.issuer_id, world.issuer_key, admin.with_key(world.trader_key["id"], world.trader_key["secret"]),
                 world.trader_id, world.trader_key, world.symbol)


async def client_id_requests(world: World, tag: str, amount: str, qty: int) -> dict[str, tuple[Client, str, str, dict]]:
    """(client, method, path, body) per kind that takes a client_request_id; ``amount`` and ``qty`` vary the body."""
    group = (await world.admin.call("GET", f"/v1/instruments/{world.symbol}"))["substitution_group"]
    return {
        "deposit": (world.admin, "POST", "/v1/deposits",
                    {"account_id": world.trader_id, "amount": amount, "client_request_id": f"dep-{tag}"}),
        "withdrawal": (world.admin, "POST", "/v1/withdrawals",
                       {"account_id": world.trader_id, "amount": amount, "client_request_id": f"wd-{tag}"}),
        "mint": (world.issuer, "POST", "/v1/mints",
                 {"symbol": world.symbol, "qty": qty, "client_request_id": f"mint-{tag}"}),
        "burn": (world.issuer, "POST", "/v1/burns",
                 {"symbol": world.symbol, "qty": qty, "client_request_id": f"burn-{tag}"}),
        "redemption": (world.issuer, "POST", "/v1/redemptions",
                       {"symbol": world.symbol, "qty": qty, "client_request_id": f"red-{tag}"}),
        "package": (world.trader, "POST", "/v1/packages",
                    {"group": group, "qty": qty, "mode": "cost", "period": "week", "max_cost": amount,
                     "start_at": START_AT, "client_request_id": f"pkg-{tag}"}),
        "order": (world.trader, "POST", "/v1/orders",
                  {"symbol": world.symbol, "side": "buy", "type": "limit", "price": "1", "qty": qty,
                   "client_order_id": f"ord-{tag}"}),
        "routed order": (world.trader, "POST", "/v1/routed-orders",
                         {"group": group, "side": "buy", "qty": qty, "mode": "cost", "price": "2",
                          "client_order_id": f"route-{tag}"}),
    }


async def test_client_ids_return_the_original_result_also_after_a_restart(restartable):
    live = restartable.start()
    world = await make_world(live)
    firsts = {}
    for kind, (client, method, path, body) in (await client_id_requests(world, "a", "10", 3)).items():
        firsts[kind] = await client.call(method, path, json=body)
    before = await state(world)
    # A retry is signed anew, and here even asks for other amounts: the id names the first result.
    for kind, (client, method, path, body) in (await client_id_requests(world, "a", "20", 4)).items():
        assert await client.call(method, path, json=body) == firsts[kind], kind
    assert await state(world) == before
    # The very same bytes with a client id are answered as the first time, not refused.
    same = Signed.make(world.admin_key, "POST", "/v1/deposits",
                       {"account_id": world.trader_id, "amount": "10", "client_request_id": "dep-b"})
    first = await same.send(live)
    assert first.status_code == 201
    again = await same.send(live)
    assert (again.status_code, again.json()) == (201, first.json())
    before = await state(world)
    await world.close()

    restartable.stop()
    live = restartable.start()
    world = await _reopen(world, live)
    for kind, (client, method, path, body) in (await client_id_requests(world, "a", "30", 5)).items():
        assert await client.call(method, path, json=body) == firsts[kind], kind
    assert await state(world) == before
    await world.close()


async def test_client_request_ids_are_per_account_and_kind(live: Live):
    world = await make_world(live)
    await world.admin.deposit(world.trader_id, "5", client_request_id="same")
    await world.admin.withdraw(world.trader_id, "2", client_request_id="same")
    other = await world.admin.create_account(unique("other"), "trader")
    await world.admin.deposit(other["id"], "7", client_request_id="same")
    assert (await world.trader.balances())["CNY"]["available"] == "1003"
    with pytest.raises(ApiError) as refused:
        await world.admin.deposit(world.trader_id, "5", client_request_id="not allowed")
    assert (refused.value.status, refused.value.field) == (422, "client_request_id")
    await world.close()


async def test_a_user_subscription_replayed_on_another_connection_is_refused(live: Live):
    world = await make_world(live)
    owner = await FeedClient.open(live)
    subscription = signed_user(world.symbol, world.trader_key["id"], world.trader_key["secret"],
                               await owner.challenge())
    await owner.subscribe("user", world.symbol, **subscription)
    answer, _ = await owner.until(lambda m: m["type"] in ("subscribed", "error"))
    assert answer["type"] == "subscribed"

    replayer = await FeedClient.open(live)
    await replayer.challenge()
    await replayer.subscribe("user", world.symbol, **subscription)
    answer, _ = await replayer.until(lambda m: m["type"] in ("subscribed", "error"))
    assert (answer["type"], answer["code"]) == ("error", "invalid_signature")
    # Not even without asking for a challenge: every connection has its own from the start.
    silent = await FeedClient.open(live)
    await silent.subscribe("user", world.symbol, **subscription)
    answer, _ = await silent.until(lambda m: m["type"] in ("subscribed", "error"))
    assert (answer["type"], answer["code"]) == ("error", "invalid_signature")
    for client in (owner, replayer, silent):
        await client.close()
    await world.close()
    assert ws_url(live).endswith("/v1/ws")


async def test_unknown_keys_are_throttled_by_address(postgres_admin_url: str):
    limits = RateLimits(per_key_rate=None, per_address_rate=1.0, per_address_burst=10.0)
    with live_server(postgres_admin_url, rate_limits=limits) as live:
        statuses = []
        async with httpx.AsyncClient(base_url=live.url) as http:
            for n in range(30):
                key = {"id": f"tk_{n:016x}", "secret": "0" * 64}
                signed = Signed.make(key, "GET", "/v1/balances")
                statuses.append((await http.get("/v1/balances", headers=signed.headers)).status_code)
        assert statuses[:5] == [401] * 5
        assert statuses[-10:] == [429] * 10


def test_a_gateway_retry_gets_the_original_result_and_a_client_replay_is_refused():
    desk = Desk()
    market = open_market(desk)
    engine = desk.engine
    order = PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=2)
    request = b"r" * 16
    first = engine.apply(order, TS, AT, request)
    assert isinstance(first, OrderView)
    assert engine.apply(order, TS, AT, request, retry=True) == first
    assert engine.apply(order, TS, AT, request) == reject("replayed_request")
    assert engine.apply(order, TS, AT, b"n" * 16, retry=True).id != first.id  # a retry never seen runs
    rows = engine.take_effects().requests
    assert [digest for digest, _, _ in rows] == [request, b"n" * 16]  # what is committed with the batch
    assert decode_result(rows[0][2]) == first
