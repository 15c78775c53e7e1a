"""``/inference/v1``: OpenAI's chat completions and models, authenticated by inference keys, paid from quotas.

A call
------
1. **Who.** ``Authorization: Bearer <key id>.<secret>`` of a key holding the ``inference`` scope alone
   (``api.keys``, Inference keys). Failed tokens count against the address's rate limit, as failed signatures do;
   good ones against the key's.
2. **What it may cost.** ``model`` is an instrument symbol (``DEEPSEEK-V3``), or a substitution group with an
   optional routing mode after a colon (``chat-general``, ``chat-general:cost``, ``:quality``, ``:balance``; the
   default is ``balance``). ``max_tokens`` (or ``max_completion_tokens``) defaults to ``DEFAULT_MAX_TOKENS`` and
   is sent to the provider, which may not write more. The worst case is ``body bytes + TOKENS_PER_MESSAGE x
   messages + max_tokens``: no tokenizer makes more tokens of a text than it has bytes, and a chat template adds
   a few per message. ``n`` must be 1. The body is at most ``MAX_BODY`` bytes of strict JSON.
3. **Reserve.** ``Reserve`` through the sequencer holds the worst case from one quota (``exchange.delivery``),
   committed before anything is forwarded; a quota that cannot cover it is refused (``quota_exceeded``) with
   nothing held.
4. **Forward.** To the providers the reservation lists (those resting after failures last, ``upstream.Health``),
   at most ``MAX_TRIES``, each with its model name, its credential (``api.credentials``) and ``max_tokens``; a
   streamed call asks for the usage in the last chunk. A provider that fails or times out is replaced by the
   next, as long as nothing of its answer reached the caller: a stream is committed to a provider once its first
   event arrives.
5. **Settle.** ``Settle`` charges what the answering provider reported (at most the reservation), credits it to
   that provider, and records every attempt as a usage row. It is submitted as the answer goes out, not waited
   for: the reservation's commit is the only one a call waits on (``GET /v1/quotas`` shows the charge a few
   milliseconds later). The answer carries ``tokex-reservation``, the id its usage rows are under.

When the caller leaves a stream before its end, the settlement charges the provider's reported usage if it came,
else one completion token per content chunk relayed. A provider whose
stream breaks after its first event is a failed attempt and charges nothing; the caller gets an ``error`` event
and the stream ends. If a settlement cannot be committed (the database is down), the reservation stays open until
its deadline and is then freed whole (``ExpireReservations``, which the period scheduler submits every few
seconds, ``exchange.scheduler``); so is the reservation of a call answered just before the server died, its
settlement not yet committed: the buyer is never charged for a call whose outcome was not recorded.

Errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``, with tokex's stable codes and
statuses (``api.problems``), and ``x-should-retry: false`` unless waiting helps (429, 502, 503), so the
``openai`` SDK does not retry a refusal.
"""

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.credentials import CredentialError, unseal
from api.endpoints import address, admit, limit, read_body
from api.inference import upstream as upstreams
from api.keys import INFERENCE, Principal
from api.problems import Problem, from_rejection
from api.services import READ_ERRORS, Services
from api.strictjson import Malformed, check
from exchange import route_planner
from exchange.commands import (
    Attempt,
    Rejection,
    ReservationView,
    Reserve,
    Settle,
    Upstream,
)
from exchange.database.queries import sql
from exchange.sequencer import Unavailable

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
DEFAULT_MAX_TOKENS = 4096
MAX_MAX_TOKENS = 1_000_000
MAX_MESSAGES = 4096
TOKENS_PER_MESSAGE = 16
MAX_TRIES = 3
MAX_CREDENTIALS = 4096
"""Opened credentials the gateway keeps (``Gateway.credential``); past that it starts afresh."""
ATTEMPT_SECONDS = 120.0
"""How long one provider may take to answer (streamed: to send each event)."""
STREAM_SECONDS = 300.0
"""How long a stream may last in all. With ``MAX_TRIES`` attempts, well within a reservation's deadline."""
RETRY_STATUSES = frozenset((429, 502, 503))
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
               415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}
JSON = "application/json"
MODELS = sql("compute_models")


class Call(msgspec.Struct):
    """What the gateway took from a request."""

    model: str
    mode: str | None
    stream: bool
    worst_case: int
    body: dict
    """What to forward, less the provider's model name."""


def openai_error(problem: Problem, extra: dict[str, str] | None = None) -> Response:
    """``problem`` as OpenAI clients read an error."""
    body = {"error": {"message": problem.detail, "type": ERROR_TYPES.get(problem.status, "api_error"),
                      "param": problem.field, "code": problem.code}}
    headers = {**problem.headers, **(extra or {})}
    if problem.status not in RETRY_STATUSES:
        headers["x-should-retry"] = "false"
    return Response(msgspec.json.encode(body), problem.status, headers=headers, media_type=JSON)


def parse(raw: bytes) -> Call:
    """The call in a request body; a 4xx ``Problem`` when it is not one the gateway takes."""
    try:
        check(raw)
    except Malformed as exc:
        raise Problem("malformed_body", str(exc)) from None
    body = msgspec.json.decode(raw)
    if not isinstance(body, dict):
        raise Problem("malformed_body", "The body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= 80:
        raise Problem("invalid_field", "model must name an instrument (DEEPSEEK-V3) or a substitution group, "
                                       "optionally with a routing mode (chat-general:quality).", field="model")
    name, _, mode = model.partition(":")
    if mode and mode not in route_planner.MODES:
        raise Problem("invalid_route_mode", field="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not 0 < len(messages) <= MAX_MESSAGES:
        raise Problem("invalid_field", f"messages must be a list of 1 to {MAX_MESSAGES} messages.", field="messages")
    if body.get("n", 1) != 1:
        raise Problem("invalid_field", "n must be 1: each call is metered as one completion.", field="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Problem("invalid_field", "stream must be true or false.", field="stream")
    given = body.pop("max_completion_tokens", None)
    max_tokens = body.get("max_tokens") if given is None else given
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if type(max_tokens) is not int or not 0 < max_tokens <= MAX_MAX_TOKENS:
        raise Problem("invalid_field", f"max_tokens must be a whole number from 1 to {MAX_MAX_TOKENS}.",
                      field="max_tokens")
    body["max_tokens"] = max_tokens
    if stream:
        body["stream_options"] = {"include_usage": True}
    worst_case = len(raw) + TOKENS_PER_MESSAGE * len(messages) + max_tokens
    return Call(name, mode or None, stream, worst_case, body)


class Gateway:
    """The gateway's routes, its one HTTP client for every provider, and the providers' health."""

    def __init__(self, services: Services, attempt_seconds: float = ATTEMPT_SECONDS) -> None:
        self.services = services
        self.client: aiohttp.ClientSession = upstreams.session(attempt_seconds)
        self.health = upstreams.Health()
        self.credentials: dict[tuple[str, bytes], str] = {}
        """Opened credentials by (symbol, sealed credential): opening one costs more than forwarding a call."""
        self.pending: set[asyncio.Task] = set()
        """Settlements under way: a call's answer does not wait for its settlement (see A call)."""

    async def close(self) -> None:
        if self.pending:
            await asyncio.wait(self.pending, timeout=10)
        await self.client.close()

    # Requests

    async def authenticate(self, request: Request, rate: dict[str, str]) -> Principal:
        """The principal of the request's bearer token; a 401 or 403 ``Problem`` otherwise."""
        services = self.services
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key_id, _, secret = token.strip().partition(".")
        if scheme.lower() != "bearer" or not secret:
            limit(services.address_limiter, address(request), rate)
            raise Problem("unauthenticated", "Send Authorization: Bearer <key id>.<secret> of an inference key.")
        found = await services.keys.find(key_id, lambda: admit(services, request))
        if found is None or not hmac.compare_digest(found[1].encode(), secret.encode("latin-1")):
            limit(services.address_limiter, address(request), rate)
            raise Problem("invalid_api_key")
        principal = found[0]
        limit(services.key_limiter, principal.key_id, rate)
        if INFERENCE not in principal.scopes:
            raise Problem("insufficient_scope", "The gateway takes inference keys only: a key holding the "
                                                "inference scope alone.")
        return principal

    async def models(self, request: Request) -> Response:
        """Every compute instrument, and every substitution group with each routing mode."""
        rate: dict[str, str] = {}
        try:
            await self.authenticate(request, rate)
        except Problem as problem:
            return openai_error(problem, rate)
        async with self.services.connection() as conn:
            computes = await conn.fetch(MODELS)
        names = [row["symbol"] for row in computes]
        for group in sorted({row["substitution_group"] for row in computes}):
            names.extend([group, *(f"{group}:{mode}" for mode in route_planner.MODES)])
        body = {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tokex"}
                                           for name in names]}
        return Response(msgspec.json.encode(body), headers=rate, media_type=JSON)

    async def chat_completions(self, request: Request) -> Response:
        rate: dict[str, str] = {}
        try:
            principal = await self.authenticate(request, rate)
            call = parse(await read_body(request, MAX_BODY))
            held = await self.services.sequencer.submit(
                Reserve(principal.account_id, call.model, call.worst_case, call.mode or "balance"))
            if isinstance(held, Rejection):
                raise from_rejection(held)
            assert isinstance(held, ReservationView)
            headers = {**rate, "tokex-reservation": str(held.id)}
            if call.stream:
                return await self.stream(call, held, headers)
            return await self.complete(call, held, headers)
        except Problem as problem:
            return openai_error(problem, rate)
        except Unavailable as exc:
            return openai_error(Problem("unavailable", f"{exc}; nothing was done, try again.",
                                        headers={"Retry-After": str(max(1, round(exc.retry_after)))}), rate)
        except READ_ERRORS:
            return openai_error(Problem("unavailable", "The database is unavailable; try again.",
                                        headers={"Retry-After": "1"}), rate)

    def tries(self, held: ReservationView, attempts: list[Attempt]) -> list[tuple[Upstream, str]]:
        """The providers to try, in order, with their credentials opened; a provider whose credential does not
        open is a failed attempt (and logged)."""
        found = []
        for upstream in self.health.order(held.providers)[:MAX_TRIES]:
            try:
                found.append((upstream, self.credential(held.symbol, upstream.credential)))
            except CredentialError:
                log.error("provider %s: its credential does not open under this master key", upstream.provider_id)
                attempts.append(Attempt(upstream.provider_id, "failed"))
        return found

    def credential(self, symbol: str, sealed: bytes) -> str:
        """The credential ``sealed`` for ``symbol``'s provider, opened once and kept; a new registration seals
        anew (a new nonce), so a changed credential is a new entry."""
        opened = self.credentials.get((symbol, sealed))
        if opened is None:
            opened = unseal(self.services.keys.master_key, symbol, sealed)
            if len(self.credentials) >= MAX_CREDENTIALS:
                self.credentials.clear()
            self.credentials[(symbol, sealed)] = opened
        return opened

    def payload(self, call: Call, model: str) -> bytes:
        return msgspec.json.encode({**call.body, "model": model})

    async def complete(self, call: Call, held: ReservationView, headers: dict[str, str]) -> Response:
        attempts: list[Attempt] = []
        for upstream, credential in self.tries(held, attempts):
            attempt, answer = await upstreams.complete(self.client, upstream, credential,
                                                       self.payload(call, upstream.model))
            attempts.append(attempt)
            self.health.record(attempt)
            if answer is not None:
                self.later(self.settle(held, attempts))
                return Response(answer.body, answer.status, headers=headers, media_type=JSON)
        self.later(self.settle(held, attempts))
        raise Problem("upstream_failed")

    async def stream(self, call: Call, held: ReservationView, headers: dict[str, str]) -> Response:
        attempts: list[Attempt] = []
        for upstream, credential in self.tries(held, attempts):
            attempt, opened = await upstreams.open_stream(self.client, upstream, credential,
                                                          self.payload(call, upstream.model))
            if isinstance(opened, upstreams.Stream):
                return StreamingResponse(self.relay(held, attempts, opened), headers=headers,
                                         media_type="text/event-stream")
            assert attempt is not None
            attempts.append(attempt)
            self.health.record(attempt)
            if isinstance(opened, upstreams.Answer):
                self.later(self.settle(held, attempts))
                return Response(opened.body, opened.status, headers=headers, media_type=JSON)
        self.later(self.settle(held, attempts))
        raise Problem("upstream_failed")

    async def relay(self, held: ReservationView, attempts: list[Attempt], stream: upstreams.Stream
                    ) -> AsyncIterator[bytes]:
        """Hand the provider's events on as they come, then settle."""
        usage: tuple[int, int] | None = None
        chunks = 0
        outcome = "left"
        event = stream.first
        try:
            deadline = stream.started + STREAM_SECONDS
            while True:
                if event == "[DONE]":
                    outcome = "done"
                    break
                if '"usage"' in event:
                    with contextlib.suppress(msgspec.DecodeError):
                        usage = upstreams.usage_of(msgspec.json.decode(event)) or usage
                chunks += 1
                yield b"data: " + event.encode() + b"\n\n"
                if time.perf_counter() > deadline:
                    outcome = "broke"
                    break
                try:
                    event = await anext(stream.events)
                except StopAsyncIteration:
                    outcome = "ended"
                    break
        except upstreams.FAILURES:
            outcome = "broke"
        except BaseException:
            # The caller left: the generator is being closed or cancelled, and may not wait any more.
            self.later(self.finish(held, attempts, stream, usage, chunks, "left"))
            raise
        self.later(self.finish(held, attempts, stream, usage, chunks, outcome))
        if outcome == "done":
            yield b"data: [DONE]\n\n"
        elif outcome != "ended" or usage is None:
            problem = Problem("upstream_failed", "The provider's stream broke off; what it sent is not charged.")
            yield b"data: " + msgspec.json.encode({"error": {"message": problem.detail, "type": "api_error",
                                                             "code": problem.code}}) + b"\n\n"

    async def finish(self, held: ReservationView, attempts: list[Attempt], stream: upstreams.Stream,
                     usage: tuple[int, int] | None, chunks: int, outcome: str) -> None:
        """Close the provider's stream and settle the call as its ``outcome`` says."""
        # A stream not read to its end closes its connection rather than return it to the pool.
        stream.response.release()
        latency = upstreams.elapsed_us(stream.started)
        provider = stream.upstream.provider_id
        if outcome == "broke" or (outcome == "ended" and usage is None):
            attempt = Attempt(provider, "failed", ttft_us=stream.ttft_us, latency_us=latency)
        else:
            prompt, completion = usage if usage is not None else (0, chunks)
            attempt = Attempt(provider, "ok", prompt, completion, stream.ttft_us, latency)
        self.health.record(attempt)
        await self.settle(held, [*attempts, attempt])

    def later(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def settle(self, held: ReservationView, attempts: list[Attempt]) -> None:
        """Commit the call's usage; if that cannot be done now, the reservation expires, charging nothing."""
        if not attempts:
            return
        try:
            result = await self.services.sequencer.submit(Settle(held.id, attempts))
        except Unavailable as exc:
            log.warning("reservation %s not settled (%s); it expires, charging nothing", held.id, exc)
            return
        if isinstance(result, Rejection):
            log.error("reservation %s not settled: %s", held.id, result.code)


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.inference
    return await gateway.chat_completions(request)


async def models(request: Request) -> Response:
    gateway: Gateway = request.app.state.inference
    return await gateway.models(request)


ROUTES = [Route("/inference/v1/chat/completions", chat_completions, methods=["POST"]),
          Route("/inference/v1/models", models, methods=["GET"])]
"""The gateway's routes; the app keeps its ``Gateway`` as ``app.state.inference``."""
