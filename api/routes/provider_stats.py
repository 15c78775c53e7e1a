"""Providers' measured effect, public: each provider's success rate, time to first token and tokens per second over
its last calls, and each instrument's measured quality, the figure ``quality`` routing uses (``exchange.delivery``).
"""

from typing import Annotated

from msgspec import Meta, Struct

from api.endpoints import Call, Endpoints
from exchange import delivery
from exchange.database.queries import sql


class ProviderStats(Struct):
    """A provider's measured figures over its last calls."""

    id: int
    provider: str
    symbol: str
    delivered: int
    attempts: int
    success_rate: Annotated[float, Meta(description="Share of attempts answered, 0 to 1 (1 with no attempts).")]
    ttft_ms: float | None
    tokens_per_second: int | None


class InstrumentEffect(Struct):
    symbol: str
    listed_quality: int
    measured_quality: Annotated[int, Meta(description="What quality routing ranks by (exchange/delivery.py).")]


class Stats(Struct):
    window_calls: int
    providers: list[ProviderStats]
    instruments: list[InstrumentEffect]


STATS = sql("provider_stats")
WINDOWS = sql("provider_windows")

measured = Endpoints("delivery")


@measured.route("GET", "/v1/providers/stats", summary="Providers' measured effect", response=Stats)
async def stats(call: Call) -> Stats:
    """Each provider's success rate, median time to first token and tokens per second over its last calls, and
    each served instrument's measured quality: the listed quality times the success rate, times 1 s over the
    median time to first token when that is longer (``exchange/delivery.py``)."""
    async with call.services.connection() as conn:
        rows = await conn.fetch(STATS)
        windows: dict[int, list[delivery.Sample]] = {}
        for provider_id, *sample in await conn.fetch(WINDOWS, delivery.WINDOW_CALLS):
            windows.setdefault(provider_id, []).append(delivery.Sample(*sample))
    found: list[ProviderStats] = []
    by_symbol: dict[str, tuple[int, list[delivery.Sample]]] = {}
    for row in rows:
        samples = windows.get(row["id"], [])
        figures = delivery.effect(samples)
        found.append(ProviderStats(row["id"], row["provider"], row["symbol"], row["delivered"], figures.attempts,
                                   figures.success_ppm / 1_000_000,
                                   None if figures.ttft_us is None else figures.ttft_us / 1000,
                                   figures.tokens_per_second))
        by_symbol.setdefault(row["symbol"], (row["quality"], []))[1].extend(samples)
    instruments = [InstrumentEffect(symbol, listed, delivery.measured_quality(listed, delivery.effect(samples)))
                   for symbol, (listed, samples) in sorted(by_symbol.items())]
    return Stats(delivery.WINDOW_CALLS, found, instruments)
