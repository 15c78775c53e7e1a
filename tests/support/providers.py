"""Simulated providers for tests: the real OpenAI-compatible server of ``api.inference.simulated``, served over HTTP
by uvicorn on a thread of its own, as the exchange would reach any provider."""

from collections.abc import Iterator
from contextlib import contextmanager

from api.inference.simulated import create_app
from tests.support.api_server import serve


@contextmanager
def simulated_provider(model: str, api_key: str = "", fail: str | None = None, delay_ms: float = 0.0
                       ) -> Iterator[str]:
    """Serve a simulated provider of ``model`` until the block ends; yield its OpenAI base URL."""
    with serve(create_app(model, api_key, fail, delay_ms), b"") as live:
        yield live.url + "/v1"
