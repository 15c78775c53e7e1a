"""Request signatures, shared by the server (``api.auth``) and the client (``api.client``).

A request carries three headers:

    TOKEX-KEY        the key id, e.g. tk_3f9a0c1d2e4b5a6c
    TOKEX-TIMESTAMP  Unix time in seconds, whole or with up to 6 decimals; the server accepts 15 seconds either way
    TOKEX-SIGNATURE  lowercase hex of HMAC-SHA256(secret, timestamp + METHOD + target + body)

``secret`` is the key's secret string as shown once at creation (its ASCII bytes are the HMAC key). ``target``
is the path and query exactly as sent on the request line (``/v1/orders?status=open``, percent-encoding
included, no scheme or host); ``body`` is the raw request body, empty for GET and DELETE.

The same signed bytes are accepted once (``api.auth``): sign every attempt anew.
"""

import hashlib
import hmac
import re

KEY_HEADER = "TOKEX-KEY"
TIMESTAMP_HEADER = "TOKEX-TIMESTAMP"
SIGNATURE_HEADER = "TOKEX-SIGNATURE"
TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
"""What TOKEX-TIMESTAMP may be (``fullmatch``): Unix seconds, with up to six decimals."""
WINDOW_SECONDS = 15
"""Why 15 and what it bounds: ``api.auth``. The replay guard remembers requests for longer
(``exchange.replay.REMEMBER_SECONDS``)."""


def signature(secret: str, timestamp: str, method: str, target: bytes | str, body: bytes = b"") -> str:
    """The hex signature of one request."""
    mac = hmac.new(secret.encode("ascii"), digestmod=hashlib.sha256)
    mac.update(timestamp.encode("ascii"))
    mac.update(method.upper().encode("ascii"))
    mac.update(target.encode("ascii") if isinstance(target, str) else target)
    mac.update(body)
    return mac.hexdigest()
