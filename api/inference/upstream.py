"""One attempt of a call on one provider, and which providers are resting after failures.

Attempts
--------
``complete`` posts a call that is not streamed and reads the whole answer; ``open_stream`` posts a streamed one
and reads up to its first event. Either ends in an ``Attempt`` (``exchange.commands``) as the settlement records
it: ``ok`` with the provider's reported usage, or ``failed`` (nothing charged). An attempt fails when the
connection fails or times out, when the provider answers 408, 429 or 5xx, or when an answer carries no usage
(metering needs it). Any other 4xx is the provider refusing the request itself (too long a context, say): it is
handed to the caller as the answer, an ``ok`` attempt of no tokens, and not tried elsewhere.

Health
------
A provider that fails ``FAILURES_TO_REST`` attempts in a row rests for ``REST_SECONDS``: it is tried after the
others until then, and again first once an attempt on it succeeds. This lives in the gateway's memory: it is
about this process's view of the network, and a restart simply gives every provider its chance again.

The client
----------
One ``aiohttp`` session (``session``) serves every provider: it keeps connections alive per host, and costs a
call a fraction of the CPU that httpx did (``loadtest/README.md``, bench-inference).
"""

import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from aiohttp.http_exceptions import HttpProcessingError

from exchange.commands import Attempt, Upstream

FAILURES_TO_REST = 3
REST_SECONDS = 30.0
CONNECT_SECONDS = 5.0
MAX_ERROR_BODY = 64 * 1024
MAX_EVENT = 1024 * 1024
"""The longest line of a streamed answer: a longer one breaks the stream (a failed attempt)."""
MAX_CONNECTIONS = 256
RETRYABLE = frozenset((408, 429))
FAILURES = (aiohttp.ClientError, HttpProcessingError, TimeoutError, UnicodeDecodeError)
"""What a failed exchange with a provider raises: the connection or a timeout, an event longer than ``MAX_EVENT``
(``LineTooLong``), or one that is not UTF-8."""


def session(attempt_seconds: float) -> aiohttp.ClientSession:
    """The one client of every provider. An attempt may wait ``CONNECT_SECONDS`` to connect, and
    ``attempt_seconds`` for each read (the whole answer, or each streamed event); ``attempt_seconds`` bounds the
    wait for a free connection too."""
    timeout = aiohttp.ClientTimeout(total=None, connect=attempt_seconds, sock_connect=CONNECT_SECONDS,
                                    sock_read=attempt_seconds)
    # No cookies and no decompression: each call stands alone, and answers are handed on as they came.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), timeout=timeout,
                                 cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)


class Health:
    """Consecutive failures per provider, and until when a provider rests."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[int, int] = {}
        self.resting_until: dict[int, float] = {}

    def order(self, upstreams: list[Upstream]) -> list[Upstream]:
        """``upstreams`` in their order, the resting ones moved last."""
        now = self.clock()
        return sorted(upstreams, key=lambda u: self.resting_until.get(u.provider_id, 0.0) > now)

    def record(self, attempt: Attempt) -> None:
        provider = attempt.provider_id
        if attempt.status == "ok":
            self.failures.pop(provider, None)
            self.resting_until.pop(provider, None)
            return
        failures = self.failures[provider] = self.failures.get(provider, 0) + 1
        if failures >= FAILURES_TO_REST:
            self.resting_until[provider] = self.clock() + REST_SECONDS


def failed(upstream: Upstream, started: float) -> Attempt:
    return Attempt(upstream.provider_id, "failed", latency_us=elapsed_us(started))


def elapsed_us(started: float) -> int:
    return int((time.perf_counter() - started) * 1_000_000)


def usage_of(answer: object) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) of an answer or a chunk, when it reports whole, non-negative counts."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0:
        return prompt, completion
    return None


class Answer(msgspec.Struct):
    """What the caller gets from a completed attempt: the provider's status and body, as they came."""

    status: int
    body: bytes


def headers_for(credential: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept-encoding": "identity"}
    if credential:
        headers["authorization"] = f"Bearer {credential}"
    return headers


def completions_url(upstream: Upstream) -> str:
    return upstream.base_url.rstrip("/") + "/chat/completions"


async def complete(client: aiohttp.ClientSession, upstream: Upstream, credential: str, payload: bytes
                   ) -> tuple[Attempt, Answer | None]:
    """Post a call that is not streamed; the attempt, and the answer to hand on unless it failed."""
    started = time.perf_counter()
    try:
        async with client.post(completions_url(upstream), data=payload, headers=headers_for(credential)) as response:
            status = response.status
            body = await (response.read() if status == 200 else read_bounded(response))
    except FAILURES:
        return failed(upstream, started), None
    latency = elapsed_us(started)
    if status >= 500 or status in RETRYABLE:
        return Attempt(upstream.provider_id, "failed", latency_us=latency), None
    if status != 200:
        return Attempt(upstream.provider_id, "ok", ttft_us=latency, latency_us=latency), Answer(status, body)
    try:
        counts = usage_of(msgspec.json.decode(body))
    except msgspec.DecodeError:
        counts = None
    if counts is None:
        return Attempt(upstream.provider_id, "failed", latency_us=latency), None
    return Attempt(upstream.provider_id, "ok", counts[0], counts[1], latency, latency), Answer(200, body)


class Stream:
    """A provider's streamed answer, opened up to its first event."""

    def __init__(self, upstream: Upstream, response: aiohttp.ClientResponse, events: AsyncIterator[str], first: str,
                 started: float) -> None:
        self.upstream = upstream
        self.response = response
        self.events = events
        self.first = first
        self.started = started
        self.ttft_us = elapsed_us(started)


async def open_stream(client: aiohttp.ClientSession, upstream: Upstream, credential: str, payload: bytes
                      ) -> tuple[Attempt | None, Stream | Answer | None]:
    """Post a streamed call and read up to its first event. A stream to relay (no attempt yet: it ends with the
    stream, whose ``response`` the caller then releases); or the attempt, with the provider's refusal to hand on,
    or None when it failed."""
    started = time.perf_counter()
    response: aiohttp.ClientResponse | None = None
    try:
        response = await client.post(completions_url(upstream), data=payload, headers=headers_for(credential))
        if response.status != 200:
            body = await read_bounded(response)
            response.release()
            latency = elapsed_us(started)
            if response.status >= 500 or response.status in RETRYABLE:
                return Attempt(upstream.provider_id, "failed", latency_us=latency), None
            return Attempt(upstream.provider_id, "ok", ttft_us=latency, latency_us=latency), Answer(
                response.status, body)
        events = data_events(response)
        first = await anext(events)
    except (*FAILURES, StopAsyncIteration):
        if response is not None:
            response.release()
        return failed(upstream, started), None
    return None, Stream(upstream, response, events, first, started)


async def read_bounded(response: aiohttp.ClientResponse) -> bytes:
    body = b""
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    return body[:MAX_ERROR_BODY]


async def data_events(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The data of each server-sent event of ``response``, ``[DONE]`` included; comments and blank lines skipped."""
    content = response.content
    while line := await content.readline(max_line_length=MAX_EVENT):
        if line.startswith(b"data:"):
            yield line[5:].strip().decode()
