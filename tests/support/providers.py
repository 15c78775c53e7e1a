"""Simulated providers for tests: the real OpenAI-compatible server of ``api.inference.simulated``, served over HTTP
by uvicorn on a thread of its own, as the exchange would reach any provider; and a buyer's quota as its calls
leave it."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from api.client import Client
from api.inference.simulated import create_app
from tests.support.api_server import serve


@contextmanager
def simulated_provider(model: str, api_key: str = "", fail: str | None = None, delay_ms: float = 0.0
                       ) -> Iterator[str]:
    """Serve a simulated provider of ``model`` until the block ends; yield its OpenAI base URL."""
    with serve(create_app(model, api_key, fail, delay_ms), b"") as live:
        yield live.url + "/v1"


async def quota(buyer: Client, symbol: str) -> dict:
    (found,) = [q for q in await buyer.quotas() if q["symbol"] == symbol]
    return found


async def settled(buyer: Client, symbol: str) -> dict:
    """The quota once no call holds any of it: a call's settlement commits just after its answer."""
    for _ in range(200):
        found = await quota(buyer, symbol)
        if found["reserved"] == 0:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"a call on {symbol} is still unsettled: {found}")
