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
"""

import time
from collections.abc import AsyncIterator

import httpx
import msgspec

from exchange.commands import Attempt, Upstream

FAILURES_TO_REST = 3
REST_SECONDS = 30.0
CONNECT_SECONDS = 5.0
MAX_ERROR_BODY = 64 * 1024
RETRYABLE = frozenset((408, 429))


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


async def complete(client: httpx.AsyncClient, upstream: Upstream, credential: str, payload: bytes,
                   timeout: float) -> tuple[Attempt, Answer | None]:
    """Post a call that is not streamed; the attempt, and the answer to hand on unless it failed."""
    started = time.perf_counter()
    try:
        response = await client.post(upstream.base_url.rstrip("/") + "/chat/completions", content=payload,
                                     headers=headers_for(credential),
                                     timeout=httpx.Timeout(timeout, connect=CONNECT_SECONDS))
    except httpx.HTTPError:
        return failed(upstream, started), None
    latency = elapsed_us(started)
    if response.status_code >= 500 or response.status_code in RETRYABLE:
        return Attempt(upstream.provider_id, "failed", latency_us=latency), None
    if response.status_code != 200:
        return Attempt(upstream.provider_id, "ok", ttft_us=latency, latency_us=latency), Answer(
            response.status_code, response.content[:MAX_ERROR_BODY])
    try:
        counts = usage_of(msgspec.json.decode(response.content))
    except msgspec.DecodeError:
        counts = None
    if counts is None:
        return Attempt(upstream.provider_id, "failed", latency_us=latency), None
    return Attempt(upstream.provider_id, "ok", counts[0], counts[1], latency, latency), Answer(200, response.content)


class Stream:
    """A provider's streamed answer, opened up to its first event."""

    def __init__(self, upstream: Upstream, response: httpx.Response, events: AsyncIterator[str], first: str,
                 started: float) -> None:
        self.upstream = upstream
        self.response = response
        self.events = events
        self.first = first
        self.started = started
        self.ttft_us = elapsed_us(started)


async def open_stream(client: httpx.AsyncClient, upstream: Upstream, credential: str, payload: bytes,
                      timeout: float) -> tuple[Attempt | None, Stream | Answer | None]:
    """Post a streamed call and read up to its first event. A stream to relay (no attempt yet: it ends with the
    stream); or the attempt, with the provider's refusal to hand on, or None when it failed."""
    started = time.perf_counter()
    response: httpx.Response | None = None
    try:
        request = client.build_request("POST", upstream.base_url.rstrip("/") + "/chat/completions",
                                       content=payload, headers=headers_for(credential),
                                       timeout=httpx.Timeout(timeout, connect=CONNECT_SECONDS))
        response = await client.send(request, stream=True)
        if response.status_code != 200:
            body = await read_bounded(response)
            await response.aclose()
            latency = elapsed_us(started)
            if response.status_code >= 500 or response.status_code in RETRYABLE:
                return Attempt(upstream.provider_id, "failed", latency_us=latency), None
            return Attempt(upstream.provider_id, "ok", ttft_us=latency, latency_us=latency), Answer(
                response.status_code, body)
        events = data_events(response)
        first = await anext(events)
    except (httpx.HTTPError, StopAsyncIteration):
        if response is not None:
            await response.aclose()
        return failed(upstream, started), None
    return None, Stream(upstream, response, events, first, started)


async def read_bounded(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    return body[:MAX_ERROR_BODY]


async def data_events(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event of ``response``, ``[DONE]`` included; comments and blank lines skipped."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()
