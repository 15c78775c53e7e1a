"""Check a request's signature and find who sent it.

The scheme is in ``api.signing``. A request is refused with 401 when a header is missing
(``unauthenticated``), the timestamp is not within 30 seconds of the server's clock (``stale_timestamp``), or
the key is unknown or revoked or the signature does not match (``invalid_signature``: the two are not told
apart). The comparison takes constant time.

Within the window a captured request could be sent again; commands that must not run twice should carry a
``client_order_id``, which makes placing an order idempotent.
"""

import hmac
import re
import time

from starlette.requests import Request

from api.keys import KeyStore, Principal
from api.problems import Problem
from api.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WINDOW_SECONDS, signature

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def target(request: Request) -> bytes:
    """The path and query as they were sent on the request line."""
    scope = request.scope
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return path + b"?" + query if query else path


async def authenticate(request: Request, body: bytes, keys: KeyStore) -> Principal:
    """The principal of a correctly signed request; raise a 401 ``Problem`` otherwise."""
    headers = request.headers
    key_id = headers.get(KEY_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    sent = headers.get(SIGNATURE_HEADER)
    if not key_id or not timestamp or not sent:
        raise Problem("unauthenticated", f"Sign the request: {KEY_HEADER}, {TIMESTAMP_HEADER} and "
                                         f"{SIGNATURE_HEADER} are required.")
    now = time.time()
    if not _TIMESTAMP.match(timestamp) or abs(now - int(timestamp)) > WINDOW_SECONDS:
        raise Problem("stale_timestamp", f"{TIMESTAMP_HEADER} must be Unix seconds within {WINDOW_SECONDS} s of "
                                         f"the server's clock (now {int(now)}).")
    found = await keys.find(key_id)
    if found is not None:
        principal, secret = found
        expected = signature(secret, timestamp, request.method, target(request), body)
        if hmac.compare_digest(expected.encode(), sent.encode("latin-1")):
            return principal
    raise Problem("invalid_signature", "The key is unknown or revoked, or the signature does not match "
                                       "HMAC-SHA256(secret, timestamp + METHOD + path?query + body).")
