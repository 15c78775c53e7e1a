"""Endpoints: one declaration per operation, from which the router, the checks and the OpenAPI document follow.

    orders = Endpoints("orders")

    @orders.route("POST", "/v1/orders", scope="trade", body=NewOrder, response=OrderWithFills, status=201,
                  errors=("unknown_instrument", "insufficient_funds"))
    async def place_order(call: Call) -> OrderWithFills:
        ...

Every request runs the same steps, in this order: read the body (at most 64 KiB, else 413; an endpoint declared
with ``stream=True`` reads its own, a file, as it arrives); rate-limit by
address (public) or check the signature and scope, then rate-limit by key (signed); a signed request that may
change state (any method but GET) carries the digest of its signature to the exchange, which runs it once
(``exchange.replay``; a replay is ``409 replayed_request``); convert path parameters
(an invalid one is the resource's 404), the query string and the body (422 naming the field, 400 for a body
that is not strict JSON (``api.strictjson``), 415 for another media type); call the handler; encode its Struct
as JSON (or send the ``Response`` it made: a file's bytes). Whatever goes wrong becomes a problem response
(``api.problems``): an ``Unavailable`` sequencer or a lost database is a 503 with Retry-After, anything unexpected
a logged 500.

One ``Resource`` serves all the methods of a path, so an undeclared method gets a 405 problem with an ``Allow``
header that lists every declared one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api import auth
from api.keys import Principal
from api.problems import Problem, from_rejection, from_validation, retry_after, retry_seconds
from api.ratelimit import RateLimiter
from api.schemas import encoder
from api.services import READ_ERRORS, Services
from api.signing import SIGNATURE_HEADER
from api.strictjson import Malformed, check
from api.units import FieldError, from_micro, to_micro
from exchange import replay
from exchange.commands import Command, Rejection, Result
from exchange.sequencer import Unavailable

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
JSON = "application/json"


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: who, what, and the services to do it with."""

    request: Request
    services: Services
    principal: Principal | None
    body: Any
    query: Any
    params: dict[str, Any]
    signed: bytes | None = None
    """The digest of a signed request that may change state (``exchange.replay``): it runs once."""

    @property
    def account_id(self) -> int:
        assert self.principal is not None, "a public endpoint has no account"
        return self.principal.account_id

    async def submit(self, command: Command) -> Result:
        """Run ``command`` through the sequencer; a rejection becomes its problem."""
        result = await self.services.sequencer.submit(command, self.signed)
        if isinstance(result, Rejection):
            raise from_rejection(result)
        return result


Handler = Callable[[Call], Awaitable[Any]]


def money(text: str, name: str, maximum: int) -> int:
    """Micro-yuan from the decimal string of field ``name``, exactly; a 422 naming the field otherwise."""
    try:
        value = to_micro(text, name)
    except FieldError as exc:
        raise Problem(exc.code, exc.detail, field=exc.field) from None
    if value > maximum:
        raise Problem("out_of_range", f"{name} may be at most {from_micro(maximum)}.", field=name)
    return value


def cursor_id(cursor: str) -> int:
    """The id in a one-part page cursor."""
    if not cursor.isdecimal() or int(cursor) > 2**63 - 1:
        raise Problem("invalid_cursor", "Pass the next_cursor of the previous page as it was.")
    return int(cursor)


async def id_page(call: Call, statement: str, owner: int, *filters: Any,
                  replica: bool = False) -> tuple[list, str | None]:
    """One page of the rows of ``statement``, newest first by id, and the cursor of the next (None on the last).

    The statement takes ``owner, before, *filters, limit``: it answers up to ``limit`` rows whose id is below
    ``before`` (any id when null); ``call.query`` has the page's ``limit`` and ``cursor``. ``replica`` reads from
    the read database, which may lag a little."""
    query = call.query
    before = None if query.cursor is None else cursor_id(query.cursor)
    connection = call.services.read_connection if replica else call.services.connection
    async with connection() as conn:
        rows = await conn.fetch(statement, owner, before, *filters, query.limit + 1)
    return rows[: query.limit], str(rows[query.limit - 1]["id"]) if len(rows) > query.limit else None


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    scope: str | tuple[str, ...] | None
    """The scope a key needs; a tuple names alternatives; None for a public endpoint."""
    body: Any
    query: type | None
    response: Any
    status: int
    errors: tuple[str, ...]
    params: dict[str, tuple[Any, str]]
    """Path parameter -> (type, the problem code when it does not convert: the resource's 404)."""
    decoder: msgspec.json.Decoder | None = field(default=None, compare=False)
    stream: bool = False
    """The body is the handler's to read (``call.request.stream()``), as it arrives and however large: a file.
    The signature then covers an empty body; the handler states what binds the bytes to it."""

    @property
    def scopes(self) -> tuple[str, ...]:
        return (self.scope,) if isinstance(self.scope, str) else self.scope or ()

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.handler.__doc__ or "")


class Endpoints(list[Endpoint]):
    """The endpoints of one resource module, declared with ``route``."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def route(self, method: str, path: str, *, summary: str, scope: str | tuple[str, ...] | None = None,
              body: Any = None,
              query: type | None = None, response: Any = None, status: int = 200, errors: tuple[str, ...] = (),
              params: dict[str, tuple[Any, str]] | None = None, stream: bool = False
              ) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            decoder = None if body is None else msgspec.json.Decoder(body)
            self.append(Endpoint(method, path, handler, summary, self.tag, scope, body, query, response, status,
                                 errors, params or {}, decoder, stream))
            return handler

        return declare


class Resource:
    """The ASGI app of one path: dispatch by method."""

    def __init__(self, path: str, endpoints: dict[str, Endpoint]) -> None:
        self.path = path
        self.endpoints = endpoints
        self.allow = ", ".join(sorted(endpoints))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        endpoint = self.endpoints.get(request.method)
        if endpoint is None:
            problem = Problem("method_not_allowed", f"{request.method} is not allowed here; allowed: {self.allow}.",
                              headers={"Allow": self.allow})
            response = problem.response(request.url.path)
        else:
            response = await run(endpoint, request)
        await response(scope, receive, send)


def routes(endpoints: list[Endpoint]) -> list[Route]:
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        methods = by_path.setdefault(endpoint.path, {})
        if endpoint.method in methods:
            raise ValueError(f"{endpoint.method} {endpoint.path} is declared twice")
        methods[endpoint.method] = endpoint
    return [Route(path, Resource(path, methods)) for path, methods in by_path.items()]


async def run(endpoint: Endpoint, request: Request) -> Response:
    """Answer one request to ``endpoint``; never raises. The answer carries the state of the rate limit it met."""
    rate: dict[str, str] = {}
    response = await answer(endpoint, request, rate)
    response.headers.update(rate)
    return response


async def answer(endpoint: Endpoint, request: Request, rate: dict[str, str]) -> Response:
    instance = request.url.path
    try:
        services: Services = request.app.state.services
        body = b"" if endpoint.stream else await read_body(request)
        principal = None
        signed = None
        if endpoint.scope is None:
            limit(services.address_limiter, address(request), rate)
        else:
            try:
                principal = await auth.authenticate(request, body, services.keys, lambda: admit(services, request))
            except Problem:
                limit(services.address_limiter, address(request), rate)
                raise
            limit(services.key_limiter, principal.key_id, rate)
            if endpoint.method != "GET":
                signed = replay.digest(request.headers[SIGNATURE_HEADER])
            if principal.scopes.isdisjoint(endpoint.scopes):
                raise Problem("insufficient_scope", f"This needs a key with the {' or '.join(endpoint.scopes)} "
                                                    f"scope; this key has {', '.join(sorted(principal.scopes))}.")
        params = path_params(endpoint, request)
        query = query_params(endpoint, request.query_params)
        parsed = parse_body(endpoint, request, body)
        result = await endpoint.handler(Call(request, services, principal, parsed, query, params, signed))
        if isinstance(result, Response):
            return result  # bytes of a file, streamed as they are read
        return Response(encoder.encode(result), endpoint.status, media_type=JSON)
    except Problem as problem:
        return problem.response(instance)
    except Unavailable as exc:
        return retry_after("unavailable", exc.retry_after, f"{exc}; nothing was done, try again.").response(instance)
    except READ_ERRORS as exc:
        log.warning("%s %s: database unavailable (%s: %s)", request.method, instance, type(exc).__name__, exc)
        return retry_after("unavailable", 1, "The database is unavailable; try again.").response(instance)
    except Exception:
        log.exception("%s %s failed", request.method, instance)
        return Problem("internal_error").response(instance)


def address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limit(limiter: RateLimiter, key: object, rate: dict[str, str]) -> None:
    wait = limiter.take(key)
    rate.update(limiter.headers(key))
    if wait:
        seconds = retry_seconds(wait)
        raise retry_after("rate_limited", seconds, f"Too many requests; retry in {seconds} s.")


def admit(services: Services, request: Request) -> None:
    """Refuse a key lookup for an address that has spent its bucket (on failed signatures, or public requests)."""
    wait = services.address_limiter.wait(address(request))
    if wait:
        seconds = retry_seconds(wait)
        raise retry_after("rate_limited", seconds, f"Too many requests; retry in {seconds} s.")


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, at most ``limit`` bytes (413 otherwise): refused from its Content-Length before it is read, or as
    soon as what arrived passes the limit."""
    too_large = Problem("body_too_large", f"The body may be at most {limit} bytes.")
    length = request.headers.get("content-length")
    if length is not None and length.isdecimal() and int(length) > limit:
        raise too_large
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def path_params(endpoint: Endpoint, request: Request) -> dict[str, Any]:
    values = {}
    for name, (kind, code) in endpoint.params.items():
        try:
            values[name] = msgspec.convert(request.path_params[name], kind, strict=False)
        except msgspec.ValidationError:
            raise Problem(code, field=name) from None
    return values


def query_params(endpoint: Endpoint, query: QueryParams) -> Any:
    if endpoint.query is None:
        for name in query:
            raise Problem("unknown_field", f"This operation takes no query parameters; got {name!r}.", field=name)
        return None
    raw: dict[str, str] = {}
    for name, value in query.multi_items():
        if name in raw:
            raise Problem("invalid_field", f"{name} is given more than once.", field=name)
        raw[name] = value
    try:
        return msgspec.convert(raw, endpoint.query, strict=False)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None


def parse_body(endpoint: Endpoint, request: Request, body: bytes) -> Any:
    if endpoint.decoder is None:
        if body.strip():
            raise Problem("malformed_body", "This operation takes no body.")
        return None
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != JSON and not (media.startswith("application/") and media.endswith("+json")):
            raise Problem("unsupported_media_type", f"The body must be {JSON}, not {media or 'empty'}.")
    try:
        check(body)
    except Malformed as exc:
        raise Problem("malformed_body", str(exc)) from None
    try:
        return endpoint.decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None
    except msgspec.DecodeError as exc:
        raise Problem("malformed_body", f"The body is not valid JSON: {exc}.") from None
