"""The inference gateway with the official ``openai`` SDK against a real tokex server and real simulated providers
over HTTP: quotas reserved and settled exactly, failover, refusals, keys, and what providers see."""

import asyncio
from dataclasses import dataclass

import asyncpg
import httpx
import openai
import pytest

from api.client import ApiError, Client
from api.inference.gateway import TOKENS_PER_MESSAGE
from api.inference.simulated import TOKENS_PER_MESSAGE as SIMULATED_PER_MESSAGE
from api.keys import bearer_token
from tests.support.api_server import Live, unique
from tests.support.feed import FeedClient, signed_user
from tests.support.providers import quota, settled, simulated_provider

TOKENS_PER_LOT = 10_000
HELLO = [{"role": "user", "content": "hello there"}]
HELLO_PROMPT = 2 + SIMULATED_PER_MESSAGE
"""What the simulated provider counts for HELLO: its words, and its tokens per message."""


@dataclass
class Served:
    symbol: str
    group: str
    issuer: Client
    issuer_id: int
    provider_id: int
    buyer: Client
    buyer_id: int
    token: str
    """The buyer's inference key as a bearer token."""


async def compute(admin: Client, new_account, group: str, minted: int = 1_000) -> tuple[str, dict, Client]:
    """A compute instrument of ``group`` with an issuer that minted ``minted`` lots: (symbol, account, client)."""
    symbol = unique("INF").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="sim", substitution_group=group,
                                  quality=80, tokens_per_lot=TOKENS_PER_LOT)
    account, issuer = await new_account("issuer", cash="1000")
    await admin.approve_issuer(account["id"], symbol, 100_000)
    if minted:
        await issuer.mint(symbol, minted)
    return symbol, account, issuer


async def serve_buyer(admin: Client, new_account, symbol: str, issuer: Client, lots: int) -> tuple[Client, int, str]:
    """A trader who bought ``lots`` of ``symbol`` from the issuer and redeemed them, with an inference key."""
    account, buyer = await new_account(cash="1000")
    await issuer.place_order(symbol, "sell", price="1.00", qty=lots)
    await buyer.place_order(symbol, "buy", price="1.00", qty=lots)
    await buyer.redeem(symbol, lots)
    key = await admin.create_key(account["id"], ["inference"])
    return buyer, account["id"], bearer_token(key["id"], key["secret"])


@pytest.fixture
async def served(live: Live, admin: Client, new_account):
    group = unique("grp")
    symbol, account, issuer = await compute(admin, new_account, group)
    with simulated_provider("sim-a", api_key="upstream-secret") as url:
        provider = await issuer.register_provider(symbol, url, "sim-a", "upstream-secret")
        buyer, buyer_id, token = await serve_buyer(admin, new_account, symbol, issuer, 1)
        yield Served(symbol, group, issuer, account["id"], provider["id"], buyer, buyer_id, token)


def sdk(live: Live, token: str, sent: list[httpx.Request] | None = None, **options) -> openai.OpenAI:
    """The official client, pointed at the gateway; the requests it sends are kept in ``sent``."""
    hooks = {"request": [sent.append]} if sent is not None else {}
    return openai.OpenAI(base_url=live.url + "/inference/v1", api_key=token,
                         http_client=httpx.Client(event_hooks=hooks), **options)


async def test_a_call_reserves_its_worst_case_and_is_charged_what_was_delivered(live: Live, served: Served) -> None:
    sent: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request)

    client = openai.AsyncOpenAI(base_url=live.url + "/inference/v1", api_key=served.token,
                                http_client=httpx.AsyncClient(event_hooks={"request": [keep]}))
    before = await quota(served.buyer, served.symbol)
    assert (before["source"], before["granted"], before["remaining"]) == ("redemption", TOKENS_PER_LOT,
                                                                           TOKENS_PER_LOT)
    with simulated_provider("sim-slow", delay_ms=400) as slow:
        await served.issuer.register_provider(served.symbol, slow, "sim-slow")
        call = asyncio.ensure_future(client.chat.completions.create(model=served.symbol, messages=HELLO,
                                                                    max_tokens=10))
        while not sent:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        during = await quota(served.buyer, served.symbol)
        answer = await call
    worst = len(sent[0].content) + TOKENS_PER_MESSAGE + 10
    assert during["reserved"] == worst and during["remaining"] == TOKENS_PER_LOT - worst
    assert answer.choices[0].message.content == "sim-slow says: hello there hello there hello there hello there"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (HELLO_PROMPT, 10)
    after = await settled(served.buyer, served.symbol)
    assert (after["reserved"], after["used"], after["remaining"]) == (0, HELLO_PROMPT + 10,
                                                                      TOKENS_PER_LOT - HELLO_PROMPT - 10)
    (provider,) = await served.issuer.providers()
    assert provider["delivered"] == HELLO_PROMPT + 10
    assert provider["obligation"] == 1_000 * TOKENS_PER_LOT - HELLO_PROMPT - 10
    assert "api_key" not in provider and "credential" not in provider
    (delivery,) = (await served.issuer.deliveries(provider["id"]))["items"]
    assert (delivery["status"], delivery["prompt_tokens"], delivery["completion_tokens"]) == ("ok", HELLO_PROMPT, 10)
    assert delivery["latency_ms"] >= 400
    (used,) = (await served.buyer.usage())["items"]
    assert (used["id"], used["provider_id"], used["completion_tokens"]) == (delivery["id"], provider["id"], 10)
    await client.close()
    assert await live.problems() == []


async def test_a_streamed_call_relays_the_same_reply_and_settles_before_it_ends(live: Live, served: Served) -> None:
    client = sdk(live, served.token)
    whole = client.chat.completions.create(model=served.symbol, messages=HELLO, max_tokens=7)
    chunks = list(client.chat.completions.create(model=served.symbol, messages=HELLO, max_tokens=7, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == "sim-a says: hello there hello there hello"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (HELLO_PROMPT, 7)
    after = await settled(served.buyer, served.symbol)
    assert (after["reserved"], after["used"]) == (0, 2 * (HELLO_PROMPT + 7))
    assert await live.problems() == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_failing_mid_call_is_replaced_by_another(live: Live, admin: Client, new_account,
                                                                  stream: bool) -> None:
    group = unique("grp")
    symbol, _, failing = await compute(admin, new_account, group)
    _, second_account, second = await compute_issuer_of(admin, new_account, symbol)
    with simulated_provider("broken", fail="drop") as broken, simulated_provider("sound") as sound:
        first = await failing.register_provider(symbol, broken, "broken")
        backup = await second.register_provider(symbol, sound, "sound")
        buyer, _, token = await serve_buyer(admin, new_account, symbol, failing, 1)
        created = sdk(live, token).chat.completions.create(model=symbol, messages=HELLO, max_tokens=5, stream=stream)
        text = ("".join(c.choices[0].delta.content or "" for c in created if c.choices) if stream
                else created.choices[0].message.content)
    assert text == "sound says: hello there hello"
    assert (await settled(buyer, symbol))["used"] == HELLO_PROMPT + 5
    (tried,) = (await failing.deliveries(first["id"]))["items"]
    (answered,) = (await second.deliveries(backup["id"]))["items"]
    assert (tried["status"], tried["prompt_tokens"] + tried["completion_tokens"]) == ("failed", 0)
    assert (answered["status"], answered["reservation_id"]) == ("ok", tried["reservation_id"])
    (provider,) = await second.providers()
    assert (provider["delivered"], provider["obligation"]) == (HELLO_PROMPT + 5, -(HELLO_PROMPT + 5))
    assert second_account["id"] == provider["account_id"]
    assert await live.problems() == []


async def compute_issuer_of(admin: Client, new_account, symbol: str) -> tuple[str, dict, Client]:
    """A second issuer of ``symbol``, approved but owing nothing."""
    account, issuer = await new_account("issuer")
    await admin.approve_issuer(account["id"], symbol, 100_000)
    return symbol, account, issuer


async def test_a_quota_that_cannot_cover_the_call_is_refused_and_nothing_is_held(live: Live, served: Served) -> None:
    sent: list[httpx.Request] = []
    client = sdk(live, served.token, sent)
    with pytest.raises(openai.ConflictError) as refused:
        client.chat.completions.create(model=served.symbol, messages=HELLO, max_tokens=TOKENS_PER_LOT)
    assert refused.value.code == "quota_exceeded" and len(sent) == 1  # refused once, not retried
    assert "redeem more" in refused.value.message
    unchanged = await quota(served.buyer, served.symbol)
    assert (unchanged["reserved"], unchanged["used"], unchanged["remaining"]) == (0, 0, TOKENS_PER_LOT)
    for model, error, code in ((unique("NOPE").upper(), openai.NotFoundError, "unknown_model"),
                               (f"{served.group}:cheapest", openai.UnprocessableEntityError, "invalid_route_mode")):
        with pytest.raises(error) as refused:
            client.chat.completions.create(model=model, messages=HELLO)
        assert refused.value.code == code
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=served.symbol, messages=HELLO, n=2)


async def test_a_group_call_goes_to_an_instrument_of_the_group(live: Live, served: Served) -> None:
    client = sdk(live, served.token)
    for model in (served.group, f"{served.group}:quality", f"{served.group}:cost"):
        answer = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=3)
        assert answer.parse().choices[0].message.content == "sim-a says: hello"
        assert int(answer.headers["tokex-reservation"]) > 0
    names = [m.id for m in client.models.list()]
    assert served.symbol in names and f"{served.group}:balance" in names


async def test_only_an_inference_key_is_taken_as_a_bearer_token(live: Live, admin: Client, served: Served) -> None:
    key_id, secret = served.token.split(".")
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(live, f"{key_id}.{'0' * 64}").chat.completions.create(model=served.symbol, messages=HELLO)
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(live, "no-dot").models.list()
    trading = await admin.create_key(served.buyer_id, ["read", "trade"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(live, bearer_token(trading["id"], trading["secret"])).models.list()
    assert refused.value.code == "insufficient_scope"
    with pytest.raises(ApiError) as mixed:
        await admin.create_key(served.buyer_id, ["read", "inference"])
    assert mixed.value.code == "invalid_scope"
    inference = Client(live.url, key_id, secret)
    assert [q["symbol"] for q in await inference.quotas()] == [served.symbol]  # it may read its quota
    with pytest.raises(ApiError) as signed:
        await inference.place_order(served.symbol, "buy", price="1.00", qty=1)
    assert signed.value.code == "insufficient_scope"
    await inference.aclose()


async def test_the_credential_is_stored_sealed_and_providers_are_measured(live: Live, served: Served) -> None:
    conn = await asyncpg.connect(live.dsn)
    try:
        sealed = await conn.fetchval("SELECT credential FROM provider WHERE id = $1", served.provider_id)
    finally:
        await conn.close()
    assert b"upstream-secret" not in sealed and len(sealed) > len("upstream-secret")
    sdk(live, served.token).chat.completions.create(model=served.symbol, messages=HELLO, max_tokens=4)
    await settled(served.buyer, served.symbol)
    stats = await served.buyer.provider_stats()
    (mine,) = [p for p in stats["providers"] if p["id"] == served.provider_id]
    assert (mine["attempts"], mine["success_rate"], mine["symbol"]) == (1, 1.0, served.symbol)
    assert mine["ttft_ms"] > 0 and mine["tokens_per_second"] > 0
    (effect,) = [i for i in stats["instruments"] if i["symbol"] == served.symbol]
    assert effect == {"symbol": served.symbol, "listed_quality": 80, "measured_quality": 80}


async def test_a_provider_is_registered_by_an_approved_issuer_only(live: Live, admin: Client, new_account,
                                                                   served: Served) -> None:
    _, stranger = await new_account("issuer")
    with pytest.raises(ApiError) as refused:
        await stranger.register_provider(served.symbol, "http://127.0.0.1:9/v1", "m")
    assert (refused.value.status, refused.value.code) == (403, "not_approved")
    with pytest.raises(ApiError) as refused:
        await served.issuer.register_provider(served.symbol, "ftp://example/v1", "m")
    assert refused.value.status == 422


async def test_the_provider_hears_of_each_delivery_and_redemption_on_its_user_channel(live: Live, admin: Client,
                                                                                       served: Served) -> None:
    key = await admin.create_key(served.issuer_id, ["read"])
    feed = await FeedClient.open(live)
    nonce = await feed.challenge()
    await feed.subscribe("user", served.symbol, **signed_user(served.symbol, key["id"], key["secret"], nonce))
    await feed.until(lambda m: m["type"] == "subscribed")
    sdk(live, served.token).chat.completions.create(model=served.symbol, messages=HELLO, max_tokens=3)
    message, _ = await feed.until(lambda m: m["type"] == "delivery")
    delivery = message["delivery"]
    assert (message["symbol"], delivery["provider_id"], delivery["status"]) == (served.symbol, served.provider_id, "ok")
    assert (delivery["prompt_tokens"], delivery["completion_tokens"]) == (HELLO_PROMPT, 3)
    assert delivery["obligation"] == 1_000 * TOKENS_PER_LOT - delivery["delivered"]
    await served.issuer.place_order(served.symbol, "sell", price="1.00", qty=2)
    await served.buyer.place_order(served.symbol, "buy", price="1.00", qty=2)
    await served.buyer.redeem(served.symbol, 2)
    message, _ = await feed.until(lambda m: m["type"] == "redemption")
    (listed, *_) = (await served.issuer.provider_redemptions(served.provider_id))["items"]
    assert message["symbol"] == served.symbol and message["redemption"] == listed
    assert listed["qty"] == 2
    await feed.close()


async def test_a_caller_leaving_a_stream_is_charged_what_was_relayed(live: Live, served: Served) -> None:
    body = {"model": served.symbol, "messages": HELLO, "max_tokens": 60, "stream": True}
    async with httpx.AsyncClient(base_url=live.url) as client, client.stream(
            "POST", "/inference/v1/chat/completions", json=body,
            headers={"authorization": f"Bearer {served.token}"}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break  # leave after the first event
    after = await settled(served.buyer, served.symbol)
    assert 0 < after["used"] <= HELLO_PROMPT + 60
    (delivery,) = (await served.issuer.deliveries(served.provider_id))["items"]
    assert delivery["status"] == "ok" and delivery["prompt_tokens"] + delivery["completion_tokens"] == after["used"]
    assert await live.problems() == []


async def test_bad_calls_get_clear_errors_and_hold_nothing(live: Live, served: Served) -> None:
    headers = {"authorization": f"Bearer {served.token}", "content-type": "application/json"}
    cases = [
        (b"{not json", 400, "malformed_body"),
        (b'{"model": "X", "model": "Y", "messages": []}', 400, "malformed_body"),
        (b"[]", 400, "malformed_body"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 422, "invalid_field"),
        (b'{"model": "%s", "messages": []}' % served.symbol.encode(), 422, "invalid_field"),
        (b'{"model": "%s", "messages": [{"role": "user"}], "max_tokens": 0}' % served.symbol.encode(), 422,
         "invalid_field"),
        (b'{"model": "%s", "messages": [{"role": "user"}], "stream": "yes"}' % served.symbol.encode(), 422,
         "invalid_field"),
        (b'{"model": "x", "messages": ["' + b"a" * (1024 * 1024) + b'"]}', 413, "body_too_large"),
    ]
    async with httpx.AsyncClient(base_url=live.url) as client:
        for body, status, code in cases:
            answer = await client.post("/inference/v1/chat/completions", content=body, headers=headers)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body[:80]
            assert answer.headers["x-should-retry"] == "false"
    unchanged = await quota(served.buyer, served.symbol)
    assert (unchanged["reserved"], unchanged["used"]) == (0, 0)
