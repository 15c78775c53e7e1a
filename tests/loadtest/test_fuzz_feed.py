"""Hypothesis-generated WebSocket frames at ``/v1/ws``: valid requests, malformed and random JSON, oversize
text and binary frames. Each example opens a connection of its own and sends up to 14 frames, then maybe an
oversized one; the server must answer each with a message of the protocol, or close cleanly (1000, 1008 policy
violation, 1009 too big), never with an internal error (1011) or by dropping the connection. Meanwhile a
healthy watcher follows level2 and trades of a market that is trading, and must go on receiving everything: its
rebuilt book equals the REST book at the end, with no gap and no wrong checksum (``tests.support.feed.Follower``
asserts both on every message).
"""

import asyncio
import json
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.client import Client
from tests.support.feed import assert_same_book, follow, open_market, random_flow, ws_url

pytestmark = pytest.mark.slow  # a fuzzer

CLEAN_CLOSES = {1000, 1008, 1009}
ANSWERS = {"subscribed", "unsubscribed", "error", "snapshot", "ticker", "candle", "trades", "heartbeat", "update"}
REPLIES = {"subscribed", "unsubscribed", "error"}
MAX_MESSAGE_BYTES = 4096
ANSWER_TIMEOUT = 5.0
"""Longer than any answer takes; a frame still unanswered then fails the test (``TimeoutError``)."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def requests(symbol: str) -> st.SearchStrategy[str]:
    """Subscribe and unsubscribe messages, mostly well formed, with odd values and fields now and then."""
    fields = st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", ""]),
         "channel": st.sampled_from(["level2", "trades", "ticker", "candles", "user", "nope"]) | st.text(max_size=8),
         "symbol": st.sampled_from([symbol, "NOPE", "", "x" * 40]) | st.text(max_size=12)},
        optional={"interval": st.sampled_from(["1m", "5m", "1h", "1d", "2m"]) | json_values,
                  "snapshot": st.booleans() | json_values, "id": st.integers() | st.text(max_size=8) | json_values,
                  "key": st.text(max_size=12), "timestamp": st.text(max_size=12), "signature": st.text(max_size=12),
                  "extra": json_values},
    )
    return fields.map(json.dumps)


def frames(symbol: str) -> st.SearchStrategy[str | bytes]:
    return st.one_of(requests(symbol), json_values.map(json.dumps), st.text(max_size=64), st.binary(max_size=64))


oversized = st.one_of(
    st.integers(MAX_MESSAGE_BYTES + 1, 64 * 1024).map(lambda size: "[" + " " * (size - 2) + "]"),
    st.integers(MAX_MESSAGE_BYTES + 1, 64 * 1024).map(lambda size: bytes(size)),
)
"""A frame over the limit, which ends its connection (1009): so it comes last, when it comes."""


def exchange(url: str, sent: list[str | bytes], seen: Counter[str]) -> None:
    """Send ``sent`` on a new connection; read until every frame is answered, or the server closes cleanly.

    Each request frame gets one answer (``subscribed``, ``unsubscribed`` or ``error``); data may come between.
    ``seen`` counts the answers by type and code, and the closes by code.
    """
    with connect(url, compression=None, max_size=None, open_timeout=10, close_timeout=5) as ws:
        answered = 0
        try:
            for frame in sent:
                ws.send(frame)
            while answered < len(sent):
                text = ws.recv(timeout=ANSWER_TIMEOUT)
                assert isinstance(text, str), "the feed sends text frames"
                messages = json.loads(text)
                assert isinstance(messages, list) and messages
                for message in messages:
                    assert message["type"] in ANSWERS, message
                    if message["type"] in REPLIES:
                        answered += 1
                        seen[f"{message['type']} {message.get('code', '')}".strip()] += 1
        except ConnectionClosed as closed:
            received = closed.rcvd
            assert received is not None, "the server dropped the connection without a close frame"
            assert received.code in CLEAN_CLOSES, f"closed with {received.code} {received.reason}"
            seen[f"closed {received.code}"] += 1


async def test_generated_frames_get_answers_or_clean_closes_and_others_keep_receiving(live):
    market = await open_market(live, traders=2)
    follower = await follow(live, market.symbol)
    url = ws_url(live)
    rng = random.Random(7)
    trading = asyncio.create_task(random_flow(market, 120, rng, concurrency=2))

    seen: Counter[str] = Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(frames(market.symbol), min_size=1, max_size=14), st.none() | oversized)
    def fuzz(sent: list[str | bytes], last: str | bytes | None) -> None:
        exchange(url, sent if last is None else [*sent, last], seen)

    await asyncio.to_thread(fuzz)
    # Some examples send more bad frames than ``FeedLimits.max_errors`` (10), which closes with 1008.
    # A frame over the message limit closes the connection (1009) before the feed reads it.
    for answer in ("subscribed", "error malformed_message", "error invalid_message", "closed 1008", "closed 1009"):
        assert seen[answer], f"no example was answered {answer}: {seen}"
    await trading
    async with Client(live.url) as public:
        await assert_same_book(follower, public, market.symbol)
    assert follower.mirror.updates > 0 and follower.trade_ids, "the healthy watcher saw no flow"
    await follower.stop()
    for client in (market.issuer, *market.traders):
        await client.aclose()
