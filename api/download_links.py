"""Expiring signed links to a dataset's file: whoever holds one may fetch the file, as its account, until it expires.

A link names the file, the account it was made for and when it expires (Unix seconds), and carries
``signature`` = hex HMAC-SHA256(link key, "file:account:expires"). Changing any of the three, or the signature,
makes it invalid; past its expiry it is refused even when intact. The link key is HMAC-SHA256(master key,
``LINK_KEY_LABEL``): every server that shares the master key (``api.keys``) verifies the links any of them made,
and the key differs from every API key's secret derived from the same master key.

A link is made for an account that holds a usable access grant (``exchange.datasets``); each fetch counts one
download against the account's grants when it starts, so a link's short life bounds what a leaked one can spend.
"""

import hashlib
import hmac

LINK_KEY_LABEL = b"tokex dataset download links"
DEFAULT_SECONDS = 300
MAX_SECONDS = 3600


def link_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, LINK_KEY_LABEL, hashlib.sha256).digest()


def sign(key: bytes, file_id: int, account_id: int, expires: int) -> str:
    """The signature of a link to ``file_id`` for ``account_id``, valid until ``expires`` (Unix seconds)."""
    return hmac.new(key, f"{file_id}:{account_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def refusal(key: bytes, file_id: int, account_id: int, expires: int, signature: str, now: float) -> str | None:
    """Why the link may not be used at ``now``: ``invalid_link`` or ``link_expired``; None when it may.
    The comparison takes constant time."""
    if not hmac.compare_digest(sign(key, file_id, account_id, expires).encode(), signature.encode()):
        return "invalid_link"
    if now >= expires:
        return "link_expired"
    return None
