"""The OpenAPI 3.1 document, generated from the endpoint declarations and their msgspec Structs.

Served at ``GET /v1/openapi.json``, and as an interactive page at ``/docs``. Schemas come from
``msgspec.json.schema_components`` (JSON Schema 2020-12, which OpenAPI 3.1 uses as it is), so they state exactly
what decoding accepts: types, ranges, patterns, and ``additionalProperties: false`` on every request body. Each
operation lists the statuses it can answer: its success, the problems of its own codes (``errors=`` of its
declaration, by ``api.problems.CODES``), and those every request of its kind can get (401/403 when signed, 409
``replayed_request`` when signed and not a GET, 404 for a path parameter, 422 for a body or a query, 400/413 for a
body, 415, 431 for an oversized head, 429 and 503 with Retry-After). Signed operations name the scope they need in
``x-tokex-scope`` and require the three TOKEX-* headers (``api.signing``).
"""

from importlib.metadata import version
from typing import Any

import msgspec

from api.endpoints import Call, Endpoint, Endpoints
from api.problems import CODES, MEDIA_TYPE, ProblemDetail
from api.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WINDOW_SECONDS

REF = "#/components/schemas/{name}"
DESCRIPTION = f"""An exchange where standardized blocks of AI tokens and dataset tokens trade like a commodity.

**Units.** CNY amounts and prices are decimal strings in yuan ("1.85"), exact to the micro-yuan: more decimals
or a price off the instrument's tick is a 422 naming the field. Quantities are integer lots.

**Signing.** Every operation with a security requirement takes three headers: `{KEY_HEADER}` (the key id),
`{TIMESTAMP_HEADER}` (Unix seconds, up to 6 decimals, within {WINDOW_SECONDS} s of the server's clock) and
`{SIGNATURE_HEADER}`: lowercase hex of HMAC-SHA256(secret, timestamp + METHOD + path?query + body), with the
path and query exactly as sent. `x-tokex-scope` names the scope the key needs. The same signed bytes are
accepted once: sent again, a request that changes state gets 409 `replayed_request` (or, with a client id, the
first answer).

**Errors** are `application/problem+json` (RFC 9457) with a stable `code`, a `detail` for people and, for
invalid input, the `field`. A 503 means nothing was done; retry after `Retry-After` seconds."""

meta = Endpoints("meta")

BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
"""The content of a file: a request body declared ``stream=True``, or a ``response=bytes``."""

RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {"description": 'The rate limit this request counts against (draft-ietf-httpapi-ratelimit-'
                                        'headers): `"key";q=100;w=2`, a bucket of 100 requests refilled in 2 s; absent '
                                        "when the server runs without rate limits.",
                         "required": False, "schema": {"type": "string"}},
    "RateLimit": {"description": 'What is left of it: `"key";r=57;t=1`, 57 requests now, full again in 1 s.',
                  "required": False, "schema": {"type": "string"}},
}


@meta.route("GET", "/v1/openapi.json", summary="This document", response=dict[str, Any])
async def openapi(call: Call) -> msgspec.Raw:
    """The OpenAPI 3.1 description of this API."""
    return call.request.app.state.openapi


def _params(kind: type | None) -> list[dict]:
    if kind is None:
        return []
    (_,), components = msgspec.json.schema_components([kind], ref_template=REF)
    schema = components[kind.__name__]
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "schema": field}
            for name, field in schema["properties"].items()]


def _problems(codes: set[str], retry: bool) -> dict[str, dict]:
    by_status: dict[int, list[str]] = {}
    for code in sorted(codes):
        by_status.setdefault(CODES[code].status, []).append(code)
    responses = {}
    for status, names in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "Problem: " + ", ".join(f"`{name}`" for name in names),
            "content": {MEDIA_TYPE: {"schema": {"$ref": REF.format(name="ProblemDetail")}}},
        }
        if retry and status in (429, 503):
            response["headers"] = {"Retry-After": {
                "description": "Seconds to wait before trying again.", "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }}
        responses[str(status)] = response
    return responses


def _codes(endpoint: Endpoint) -> set[str]:
    codes = {"rate_limited", "unavailable", "malformed_body", "body_too_large", "headers_too_large", *endpoint.errors}
    if endpoint.scope is not None:
        codes |= {"unauthenticated", "invalid_signature", "stale_timestamp", "insufficient_scope"}
        if endpoint.method != "GET":
            codes.add("replayed_request")
    codes |= {code for _, code in endpoint.params.values()}
    if endpoint.query is not None:
        codes |= {"invalid_field", "unknown_field", "missing_field"}
    if endpoint.body is not None:
        codes |= {"invalid_field", "unknown_field", "missing_field", "unsupported_media_type"}
    return codes


def document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI document of ``endpoints``."""
    kinds = list(dict.fromkeys(kind for e in endpoints for kind in (e.body, e.response)
                               if kind is not None and kind is not bytes))
    schemas, components = msgspec.json.schema_components([*kinds, ProblemDetail], ref_template=REF)
    schema_of = dict(zip(kinds, schemas, strict=False))

    paths: dict[str, dict] = {}
    for endpoint in endpoints:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": msgspec.json.schema(kind)}
            for name, (kind, _) in endpoint.params.items()
        ]
        operation: dict[str, Any] = {
            "operationId": endpoint.handler.__name__,
            "summary": endpoint.summary,
            "description": endpoint.description,
            "tags": [endpoint.tag],
            "parameters": parameters + _params(endpoint.query),
            "responses": {
                str(endpoint.status): {
                    "description": endpoint.summary,
                    "headers": RATE_LIMIT_HEADERS,
                    "content": BINARY if endpoint.response is bytes else
                    {"application/json": {"schema": schema_of[endpoint.response]}},
                },
                **_problems(_codes(endpoint), retry=True),
            },
        }
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": schema_of[endpoint.body]}},
            }
        elif endpoint.stream:
            operation["requestBody"] = {"required": True, "content": BINARY}
        if endpoint.scope is None:
            operation["security"] = []
        else:
            operation["security"] = [{"tokexKey": [], "tokexTimestamp": [], "tokexSignature": []}]
            operation["x-tokex-scope"] = list(endpoint.scopes)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation

    return _json_schema_patterns({
        "openapi": "3.1.0",
        "info": {"title": "tokex", "version": version("tokex"), "description": DESCRIPTION},
        # Relative: the server that serves this document, at whatever address it was reached.
        "servers": [{"url": "/", "description": "This server"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "tokexKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER,
                             "description": "The API key's id."},
                "tokexTimestamp": {"type": "apiKey", "in": "header", "name": TIMESTAMP_HEADER,
                                   "description": f"Unix seconds, within {WINDOW_SECONDS} s of the server."},
                "tokexSignature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER,
                                   "description": "Hex HMAC-SHA256(secret, timestamp + METHOD + target + body)."},
            },
        },
    })


def _json_schema_patterns(node: Any) -> Any:
    """``node`` with every pattern's final ``\\Z`` (``api.schemas.whole``) written ``$``: JSON Schema patterns are
    ECMA-262 regexes, in which ``$`` is the very end, as ``\\Z`` is in Python, and ``\\Z`` means nothing."""
    if isinstance(node, dict):
        return {key: value[:-2] + "$" if key == "pattern" and isinstance(value, str) and value.endswith("\\Z")
                else _json_schema_patterns(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_json_schema_patterns(value) for value in node]
    return node
