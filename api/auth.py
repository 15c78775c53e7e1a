"""Check a request's signature and find who sent it.

The scheme is in ``api.signing``. A request is refused with 401 when a header is missing
(``unauthenticated``), the timestamp is not within ``WINDOW_SECONDS`` (15) of the server's clock
(``stale_timestamp``), or the key is unknown or revoked or the signature does not match (``invalid_signature``:
the two are not told apart). The comparison takes constant time. A key that must be looked up in the database
(not cached) is first admitted by the caller: a failed request counts against the sender's address, and an
address out of tokens gets no lookup, so requests under made-up keys are throttled before they cost a query.

Replays
-------
Two identical signed requests are one request. A request that may change state runs at most once: the exchange
records the digest of its signature with its effects (``exchange.replay``), and the same bytes sent again are
refused with ``409 replayed_request``, or, when they carry a client id (``client_order_id``,
``client_request_id``), answered with what the first copy did. A retry is a new request (a new timestamp, so a
new signature) with the same client id. The timestamp may carry up to six decimals, so that a client sending
the same body twice in one second (two equal orders) makes two requests: ``api.client`` signs in microseconds.

The window
----------
The timestamp bounds how long a captured request stays usable, and so how long the replay guard must remember
it: a request can be accepted from ``WINDOW_SECONDS`` before its timestamp to as long after, so the guard keeps
each digest for more than twice the window. It was 30 s; 15 s halves that memory and the time a withheld
request can be delivered late, and still leaves room for an unsynchronised client clock and a slow network.
Clients should keep their clocks synchronised (NTP) and sign each attempt anew.
"""

import hmac
import time
from collections.abc import Callable

from starlette.requests import Request

from api.keys import KeyStore, Principal
from api.problems import Problem
from api.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP, TIMESTAMP_HEADER, WINDOW_SECONDS, signature


def target(request: Request) -> bytes:
    """The path and query as they were sent on the request line."""
    scope = request.scope
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return path + b"?" + query if query else path


async def authenticate(request: Request, body: bytes, keys: KeyStore, admit: Callable[[], None] | None = None
                       ) -> Principal:
    """The principal of a correctly signed request; raise a 401 ``Problem`` otherwise. ``admit`` is called
    before the key is looked up in the database, and may raise to refuse the request."""
    headers = request.headers
    key_id = headers.get(KEY_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    sent = headers.get(SIGNATURE_HEADER)
    if not key_id or not timestamp or not sent:
        raise Problem("unauthenticated", f"Sign the request: {KEY_HEADER}, {TIMESTAMP_HEADER} and "
                                         f"{SIGNATURE_HEADER} are required.")
    now = time.time()
    if not TIMESTAMP.fullmatch(timestamp) or abs(now - float(timestamp)) > WINDOW_SECONDS:
        raise Problem("stale_timestamp", f"{TIMESTAMP_HEADER} must be Unix seconds (up to 6 decimals) within "
                                         f"{WINDOW_SECONDS} s of the server's clock (now {int(now)}).")
    found = await keys.find(key_id, admit)
    if found is not None:
        principal, secret = found
        expected = signature(secret, timestamp, request.method, target(request), body)
        if hmac.compare_digest(expected.encode(), sent.encode("latin-1")):
            return principal
    raise Problem("invalid_signature", "The key is unknown or revoked, or the signature does not match "
                                       "HMAC-SHA256(secret, timestamp + METHOD + path?query + body).")
