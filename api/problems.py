"""Errors as RFC 9457 problem details: one table from stable code to HTTP status, and the responses.

Every error the API answers is ``application/problem+json``:

    {"type": "urn:tokex:problem:off_tick_price", "title": "Price off the tick", "status": 422,
     "code": "off_tick_price", "detail": "The price must be a multiple of the instrument's tick.",
     "field": "price", "instance": "/v1/orders"}

``code`` is stable and meant for programs; ``detail`` is for people and may change; ``field`` names the
request field at fault (dotted for nested ones) when there is one.

Statuses
--------
- 400: the body is not JSON, or a key is given twice in an object, or it nests too deeply.
- 401: no signature, a bad one, an unknown or revoked key, or a timestamp outside the window.
- 403: the key lacks the scope, or the account's role does not allow the action.
- 404: no such route, or no such thing *for this account* (another account's order is "unknown_order").
- 405, 413, 415: method, body size (over 64 KiB; a dataset file over its cap, ``file_too_large``) and media type.
- 410: a dataset download link past its expiry (``link_expired``).
- 409: the request is valid, but the exchange's current state refuses it (funds, tokens, a halted
  instrument, a taken name, capacity): the same request, signed again, may succeed later.
  ``replayed_request`` is the exception: these exact signed bytes were accepted before, and never run twice.
- 422: the request itself is invalid (type, range, precision, tick, size); ``field`` says where.
- 429: rate limited; 431: the request line and headers are over 32 KiB (the server answers it and closes the
  connection); 503: the exchange cannot take commands or reach its database right now. Both carry
  ``Retry-After`` (seconds). A 503 means nothing was done.

Every rejection code of ``exchange.rejections.MESSAGES`` is in ``CODES``; a test keeps it that way.
"""

import math
import re
from typing import NamedTuple, TypeVar

import msgspec
from starlette.responses import Response

from exchange.commands import Rejection
from exchange.rejections import MESSAGES

MEDIA_TYPE = "application/problem+json"


class Spec(NamedTuple):
    status: int
    title: str
    field: str | None = None
    """The request field an engine rejection is about, when the code alone says it."""


CODES: dict[str, Spec] = {
    # The request as a whole
    "malformed_body": Spec(400, "Malformed body"),
    "unauthenticated": Spec(401, "Signature required"),
    "invalid_signature": Spec(401, "Invalid signature"),
    "stale_timestamp": Spec(401, "Timestamp outside the window"),
    "insufficient_scope": Spec(403, "Key lacks the scope"),
    "not_found": Spec(404, "No such route"),
    "method_not_allowed": Spec(405, "Method not allowed"),
    "body_too_large": Spec(413, "Body too large"),
    "unsupported_media_type": Spec(415, "Unsupported media type"),
    "rate_limited": Spec(429, "Rate limited"),
    "headers_too_large": Spec(431, "Headers too large"),
    "internal_error": Spec(500, "Internal error"),
    "unavailable": Spec(503, "Exchange unavailable"),
    # Validation of fields
    "invalid_field": Spec(422, "Invalid field"),
    "unknown_field": Spec(422, "Unknown field"),
    "missing_field": Spec(422, "Missing field"),
    "invalid_decimal": Spec(422, "Invalid decimal"),
    "too_precise": Spec(422, "Too many decimals"),
    "out_of_range": Spec(422, "Out of range"),
    "invalid_cursor": Spec(422, "Invalid cursor", "cursor"),
    "invalid_scope": Spec(422, "Scope not allowed for the role", "scopes"),
    # Things the API itself keeps
    "unknown_key": Spec(404, "Unknown key"),
    # The engine's rejections
    "unknown_account": Spec(404, "Unknown account"),
    "unknown_instrument": Spec(404, "Unknown instrument"),
    "unknown_order": Spec(404, "Unknown order"),
    "not_permitted": Spec(403, "Not permitted for this role"),
    "not_approved": Spec(403, "Issuer not approved"),
    "instrument_halted": Spec(409, "Instrument halted"),
    "insufficient_funds": Spec(409, "Insufficient funds"),
    "insufficient_tokens": Spec(409, "Insufficient tokens"),
    "would_take": Spec(409, "Post-only order would take", "post_only"),
    "duplicate_order_id": Spec(409, "Duplicate order id"),
    "replayed_request": Spec(409, "Request already accepted"),
    "no_change": Spec(409, "Amendment changes nothing"),
    "qty_not_above_filled": Spec(409, "Quantity not above filled", "qty"),
    "name_taken": Spec(409, "Name taken", "name"),
    "invalid_text": Spec(422, "Text not storable"),
    "amount_too_large": Spec(422, "Amount too large", "amount"),
    "symbol_taken": Spec(409, "Symbol taken", "symbol"),
    "over_capacity": Spec(409, "Over capacity", "qty"),
    "over_supply_cap": Spec(409, "Over supply cap", "qty"),
    "capacity_below_issued": Spec(409, "Capacity below issued", "capacity"),
    "invalid_amount": Spec(422, "Invalid amount", "amount"),
    "invalid_qty": Spec(422, "Invalid quantity", "qty"),
    "invalid_price": Spec(422, "Invalid price", "price"),
    "off_tick_price": Spec(422, "Price off the tick", "price"),
    "invalid_budget": Spec(422, "Invalid budget", "budget"),
    "budget_too_small": Spec(422, "Budget too small", "budget"),
    "invalid_order_type": Spec(422, "Invalid order type", "type"),
    "invalid_side": Spec(422, "Invalid side", "side"),
    "invalid_time_in_force": Spec(422, "Invalid time in force", "tif"),
    "invalid_stp_mode": Spec(422, "Invalid self-trade prevention mode", "stp"),
    "post_only_requires_gtc": Spec(422, "Post-only requires GTC", "tif"),
    "qty_below_minimum": Spec(422, "Quantity below minimum", "qty"),
    "qty_above_maximum": Spec(422, "Quantity above maximum", "qty"),
    "invalid_role": Spec(422, "Invalid role", "role"),
    "invalid_instrument": Spec(422, "Invalid instrument"),
    "invalid_status": Spec(422, "Invalid status", "status"),
    # Routed orders and packages
    "unknown_group": Spec(404, "Unknown substitution group", "group"),
    "unknown_routed_order": Spec(404, "Unknown routed order"),
    "invalid_route_mode": Spec(422, "Invalid routing mode", "mode"),
    "limit_or_budget_required": Spec(422, "Limit price or budget required", "price"),
    "invalid_route_budget": Spec(422, "Invalid budget", "budget"),
    "rest_requires_price": Spec(422, "Resting needs a limit price", "rest_remainder"),
    "unknown_package": Spec(404, "Unknown package"),
    "invalid_period": Spec(422, "Invalid period", "period"),
    "invalid_max_cost": Spec(422, "Invalid cost cap", "max_cost"),
    "invalid_start": Spec(422, "Invalid start time", "start_at"),
    "invalid_package_status": Spec(422, "Invalid package status", "status"),
    "package_cancelled": Spec(409, "Package cancelled"),
    "package_not_active": Spec(409, "Package not active"),
    "period_not_due": Spec(409, "Period not due", "period"),
    # Datasets
    "not_a_dataset": Spec(422, "Not a dataset", "symbol"),
    "invalid_terms": Spec(422, "Invalid terms"),
    "no_terms": Spec(409, "No license terms"),
    "terms_not_accepted": Spec(422, "Terms not accepted", "terms_version"),
    "terms_changed": Spec(409, "Terms changed", "terms_version"),
    "grant_too_large": Spec(422, "Grant too large", "qty"),
    "unknown_file": Spec(404, "Unknown file"),
    "no_access": Spec(403, "No access grant"),
    "file_exists": Spec(409, "File exists", "name"),
    "too_many_files": Spec(409, "Too many files"),
    "file_too_large": Spec(413, "File too large"),
    "checksum_mismatch": Spec(422, "Checksum mismatch", "sha256"),
    "invalid_link": Spec(403, "Invalid download link"),
    "link_expired": Spec(410, "Download link expired"),
    # Subscriptions
    "invalid_offer": Spec(422, "Invalid subscription offer"),
    "unknown_offer": Spec(404, "Unknown subscription offer", "offer_id"),
    "offer_withdrawn": Spec(409, "Offer withdrawn", "offer_id"),
    "unknown_subscription": Spec(404, "Unknown subscription", "subscription_id"),
    # Delivery
    "not_compute": Spec(422, "Not a compute instrument", "symbol"),
    "invalid_provider": Spec(422, "Invalid provider"),
    "unknown_model": Spec(404, "Unknown model", "model"),
    "invalid_tokens": Spec(422, "Invalid tokens", "tokens"),
    "no_provider": Spec(409, "No provider"),
    "quota_exceeded": Spec(409, "Quota exceeded"),
    "unknown_reservation": Spec(404, "Unknown reservation"),
    "invalid_attempts": Spec(422, "Invalid attempts", "attempts"),
    "unknown_provider": Spec(404, "Unknown provider"),
    "invalid_api_key": Spec(401, "Invalid API key"),
    "upstream_failed": Spec(502, "Providers failed"),
}

DETAILS = {
    **MESSAGES,
    "unknown_key": "No such API key in this account.",
    "unknown_routed_order": "No such routed order in this account.",
    "file_exists": "The dataset already has a file of that name; files never change, upload under a new name.",
    "too_many_files": "The dataset has as many files as it may have.",
    "checksum_mismatch": "The body's SHA-256 is not the sha256 the request was signed with; nothing was stored.",
    "invalid_link": "The download link was altered or is not one of this exchange's; ask for a new link.",
    "link_expired": "The download link has expired; ask for a new one (GET /v1/dataset-files/{id}/link).",
    "unknown_provider": "No such provider of this account.",
    "invalid_api_key": "The bearer token is not <key id>.<secret> of a live inference key.",
    "upstream_failed": "No provider of the instrument answered; nothing was charged. Try again.",
    "not_found": "No such route; the API is described at /v1/openapi.json.",
    "internal_error": "The server hit an unexpected error; nothing is known to have changed. Try again.",
}


class ProblemDetail(msgspec.Struct, omit_defaults=True):
    """An error, as RFC 9457 problem details."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    field: str | None = None


_encoder = msgspec.json.Encoder()


class Problem(Exception):
    """An error to answer with; raise it from anywhere below a handler."""

    def __init__(self, code: str, detail: str | None = None, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        spec = CODES[code]
        self.code = code
        self.status = spec.status
        self.detail = detail or DETAILS.get(code) or spec.title
        self.field = field or spec.field
        self.headers = headers or {}
        super().__init__(f"{code}: {self.detail}")

    def response(self, instance: str | None = None) -> Response:
        body = ProblemDetail(f"urn:tokex:problem:{self.code}", CODES[self.code].title, self.status, self.code,
                             self.detail, instance, self.field)
        return Response(_encoder.encode(body), self.status, headers=self.headers, media_type=MEDIA_TYPE)


T = TypeVar("T")


def known(value: T | None, code: str, field: str | None = None) -> T:
    """``value``, unless it is None: then the problem ``code``, the 404 of something unknown."""
    if value is None:
        raise Problem(code, field=field)
    return value


def retry_seconds(seconds: float) -> int:
    """``seconds`` as Retry-After states it: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def retry_after(code: str, seconds: float, detail: str | None = None) -> Problem:
    """A 429 or 503 that tells the client when to come back (``retry_seconds``); a detail that names a wait
    should name ``retry_seconds(seconds)``, so that it and the header agree."""
    return Problem(code, detail, headers={"Retry-After": str(retry_seconds(seconds))})


def from_rejection(rejection: Rejection) -> Problem:
    """The problem for an engine rejection; unknown codes are a programmer error."""
    if rejection.code not in CODES:
        raise KeyError(f"engine rejection code {rejection.code!r} has no entry in api.problems.CODES")
    return Problem(rejection.code, rejection.message)


_AT = re.compile(r" - at `\$((?:\.[^`]*?|\[\d+\])*)`$")
_NAMED = re.compile(r"^Object (contains unknown|missing required) field `([^`]*)`")


def from_validation(error: msgspec.ValidationError, prefix: str = "") -> Problem:
    """The 422 for a msgspec validation error, naming the field from its ``- at `$.path` `` suffix."""
    message = str(error)
    path = ""
    at = _AT.search(message)
    if at is not None:
        path = at.group(1).lstrip(".")
        message = message[: at.start()]
    code = "invalid_field"
    named = _NAMED.match(message)
    if named is not None:
        code = "unknown_field" if named.group(1) == "contains unknown" else "missing_field"
        path = f"{path}.{named.group(2)}" if path else named.group(2)
    field = ".".join(filter(None, (prefix, path))) or None
    return Problem(code, f"{field}: {message}" if field else message, field=field)
