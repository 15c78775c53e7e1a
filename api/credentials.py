"""Providers' upstream credentials, sealed at rest with the master key and opened only to forward a call.

A credential is sealed with AES-256-GCM (``cryptography``) under a key derived from the master key
(``HMAC-SHA256(master key, "tokex provider credential")``), with a fresh 12-byte nonce, and the instrument's
symbol as associated data: a sealed credential copied onto another instrument's provider does not open. The
database holds ``nonce + ciphertext``; without the master key it is noise, like the API keys' salts
(``api.keys``). The API never shows a credential again once registered; only the gateway opens it, to forward
(and keeps it opened in memory, ``Gateway.credential``).
"""

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
PURPOSE = b"tokex provider credential"


class CredentialError(ValueError):
    """A sealed credential does not open under this master key (it changed, or the row was altered)."""


def _cipher(master_key: bytes) -> AESGCM:
    return AESGCM(hmac.new(master_key, PURPOSE, hashlib.sha256).digest())


def seal(master_key: bytes, symbol: str, credential: str) -> bytes:
    """``credential`` encrypted for the provider of ``symbol``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher(master_key).encrypt(nonce, credential.encode(), symbol.encode())


def unseal(master_key: bytes, symbol: str, sealed: bytes) -> str:
    """The credential ``seal`` made; raise ``CredentialError`` if it does not open."""
    try:
        return _cipher(master_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], symbol.encode()).decode()
    except (InvalidTag, ValueError) as exc:
        raise CredentialError(f"the credential of the {symbol} provider does not open under this master key") from exc
