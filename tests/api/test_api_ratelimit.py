"""Token buckets: the limiter alone on a fake clock, then a live server with small limits."""

from collections.abc import Iterator

import httpx
import pytest

from api.client import Client, Signer
from api.ratelimit import RateLimiter, RateLimits
from tests.support.api_server import Live, live_server


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0
    clock.now += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0
    clock.now += 60
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_bucket_tells_its_state_in_the_ietf_fields():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock, name="key")
    assert limiter.policy == '"key";q=3;w=2'
    limiter.take("k")
    assert limiter.headers("k") == {"RateLimit-Policy": '"key";q=3;w=2', "RateLimit": '"key";r=2;t=1'}
    limiter.take("k")
    limiter.take("k")
    assert limiter.take("k") > 0
    assert limiter.headers("k")["RateLimit"] == '"key";r=0;t=2'
    assert limiter.refusals == 1
    assert RateLimiter(None, 1).headers("k") == {}


def test_no_rate_means_no_limit_and_idle_buckets_are_forgotten():
    assert all(RateLimiter(None, 1).take("k") == 0.0 for _ in range(100))
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock, max_keys=10)
    for key in range(10):
        limiter.take(key)
    clock.now += 5
    limiter.take("new")
    assert len(limiter) == 1


def test_a_charge_spends_tokens_taken_elsewhere_into_debt_which_is_paid_back_first():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock, max_keys=2)
    limiter.charge("k", 5)
    assert limiter.take("k") == pytest.approx(1.5)  # from -2 tokens to 1, at 2 a second
    assert limiter.headers("k")["RateLimit"].split(";")[1] == "r=0"
    limiter.take("idle")
    # Two seconds on, the idle bucket is full again and pruned; the one in debt is not full, and stays.
    clock.now += 2
    limiter.take("new")
    assert len(limiter) == 2
    assert limiter.take("k") == 0.0
    assert limiter.headers("k")["RateLimit"].split(";")[1] == "r=1"
    assert limiter.usage is None  # nothing is counted unless the limiter is shared


LIMITS = RateLimits(per_key_rate=0.5, per_key_burst=5, per_address_rate=0.5, per_address_burst=4)


@pytest.fixture
def limited(postgres_admin_url: str) -> Iterator[Live]:
    with live_server(postgres_admin_url, rate_limits=LIMITS) as server:
        yield server


async def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) == 2  # one token at 0.5 a second
    assert ";r=0;" in response.headers["ratelimit"]


async def test_public_endpoints_are_limited_per_address(limited):
    async with Client(limited.url) as anonymous:
        responses = [await anonymous.request("GET", "/v1/instruments") for _ in range(5)]
    assert [r.status_code for r in responses[:4]] == [200] * 4
    await assert_limited(responses[4])
    # Every answer, not only the 429, tells the bucket's state: 4 requests per 8 s, one fewer each time.
    assert {r.headers["ratelimit-policy"] for r in responses} == {'"address";q=4;w=8'}
    assert [r.headers["ratelimit"].split(";")[1] for r in responses] == ["r=3", "r=2", "r=1", "r=0", "r=0"]


async def test_signed_requests_are_limited_per_key(limited):
    async with Client(limited.url, limited.admin_key, limited.admin_secret) as admin:
        account = await admin.create_account("limited", "trader")
        keys = limited.app.state.services.keys
        (first, first_secret), (second, second_secret) = [
            limited.run(keys.create(account["id"], ["read"])) for _ in range(2)]
        async with admin.with_key(first.id, first_secret) as one, admin.with_key(second.id, second_secret) as two:
            responses = [await one.request("GET", "/v1/balances") for _ in range(6)]
            assert [r.status_code for r in responses[:5]] == [200] * 5
            await assert_limited(responses[5])
            assert {r.headers["ratelimit-policy"] for r in responses} == {'"key";q=5;w=10'}
            assert responses[0].headers["ratelimit"].startswith('"key";r=4;t=')
            assert (await two.request("GET", "/v1/balances")).status_code == 200
        # Signed requests do not spend the address's bucket.
        assert (await admin.request("GET", "/v1/instruments")).status_code == 200


async def test_failed_signatures_spend_the_address_bucket(limited):
    async with httpx.AsyncClient(base_url=limited.url, auth=Signer(limited.admin_key, "0" * 64)) as guesser:
        assert [(await guesser.get("/v1/balances")).status_code for _ in range(4)] == [401] * 4
        await assert_limited(await guesser.get("/v1/balances"))
        await assert_limited(await guesser.get("/v1/instruments"))
