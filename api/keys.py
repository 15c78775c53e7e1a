"""API keys: their scopes, the master key, and secrets that a database dump cannot reproduce.

Keys
----
A key is a public id (``tk_`` and 16 hex digits, sent as TOKEX-KEY), an account, scopes and a secret that
signs requests (``api.signing``). An admin creates keys (``POST /v1/keys``, or the CLI through
``KeyStore.create``); the secret is returned once. Keys are revoked, never deleted, so their ids stay unique.

Scopes
------
``read`` (own reads), ``trade`` (orders, redemptions), ``issue`` (mint, burn, providers), ``admin`` (everything
an admin does), ``inference`` (calls to the inference gateway). Which scopes a key may hold follows its account's
role: admin: read, admin; issuer: read, trade, issue, inference; trader: read, trade, inference.

Inference keys
--------------
OpenAI clients send a fixed ``Authorization: Bearer <token>`` with every call, so the secret itself travels
instead of a signature. To keep that safe, ``inference`` is a key of its own: a key holding it holds nothing else
(``INFERENCE``), so a token that leaks can spend the account's quota of tokens and read it, and nothing more: it
cannot sign an order, a withdrawal or a key change, and the secret of a trading key is never taken as a bearer
token. The token is ``<key id>.<secret>`` (``bearer_token``); the gateway finds the key like a signed request
does (cached, unknown ids cached apart, lookups admitted by the address's rate limit), derives its secret and
compares in constant time. A bearer token can be replayed by whoever sees it: serve the gateway over TLS, and
revoke a key that leaked.

Secrets
-------
The secret is never stored. The ``api_key`` row holds a random 32-byte salt, and the secret is
``hex(HMAC-SHA256(master key, key id + salt))``, derived again whenever a request is checked. Without the master
key the rows cannot sign anything, so a database dump or backup alone is not a credential.

Master key
----------
32 random bytes kept outside the database: ``TOKEX_MASTER_KEY`` (64 hex digits) when set, else the file
``$TOKEX_HOME/master.key``, created with mode 0600 on first start. Keep it with the server's secrets and out of
backups of the database. Losing or changing it invalidates every key at once (then create new ones).

Caching
-------
A checked key is cached for ``CACHE_SECONDS``: revoking through this process takes effect at once; a key
revoked by another process (the CLI) stops working within that time. An unknown (or revoked) key id is cached
as unknown for as long, apart, so that a flood of requests under made-up keys neither costs a query each nor
pushes the live keys out; ``find`` calls ``admit`` before each query it does make, which lets the caller refuse
it (``api.endpoints``: an address that has spent its rate limit on failed signatures gets no more lookups).
Lookups of one key id made while its query is under way wait for that query rather than send their own: when a
busy key's entry expires, the requests in flight under it cost one query, not one each.

Replays
-------
Creating and revoking keys happen outside the sequencer; the digest of the signed request that asks for it
(``exchange.replay``) is inserted into ``signed_request`` in the same transaction, so the same request sent
again finds it and is refused with ``ReplayedRequest`` (a replayed creation would hand a fresh secret to
whoever captured it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from exchange.config import tokex_home
from exchange.database.queries import sql

SCOPES = ("read", "trade", "issue", "admin", "inference")
ROLE_SCOPES = {
    "admin": frozenset(("read", "admin")),
    "issuer": frozenset(("read", "trade", "issue", "inference")),
    "trader": frozenset(("read", "trade", "inference")),
}
INFERENCE = "inference"
"""The scope of the inference gateway, held alone (see Inference keys)."""
KEY_ID = re.compile(r"tk_[0-9a-f]{16}\Z")  # \Z, not $: $ also matches before a final newline
CACHE_SECONDS = 2.0
MASTER_KEY_ENV = "TOKEX_MASTER_KEY"
MASTER_KEY_FILE = "master.key"


def load_master_key(home: Path | str | None = None) -> bytes:
    """The master key from TOKEX_MASTER_KEY, else from ``home``/master.key (made 0600 on first use)."""
    text = os.environ.get(MASTER_KEY_ENV)
    if text:
        return _parse_master_key(text, MASTER_KEY_ENV)
    folder = Path(home) if home is not None else tokex_home()
    path = folder / MASTER_KEY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _parse_master_key(path.read_text(), str(path))
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
    return _parse_master_key(path.read_text(), str(path))


def _parse_master_key(text: str, origin: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"{origin} must hold a master key of 64 hex digits (32 random bytes)")
    return key


def bearer_token(key_id: str, secret: str) -> str:
    """What an inference key sends as ``Authorization: Bearer``: its id and secret."""
    return f"{key_id}.{secret}"


def derive_secret(master_key: bytes, key_id: str, salt: bytes) -> str:
    """The signing secret of key ``key_id``."""
    return hmac.new(master_key, key_id.encode("ascii") + salt, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its account and what it may do."""

    key_id: str
    account_id: int
    role: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class KeyRow:
    id: str
    account_id: int
    scopes: list[str]
    label: str
    created_at: datetime
    revoked_at: datetime | None


class ScopeNotAllowed(ValueError):
    """The scopes asked for are not all allowed for the account's role."""


class UnknownAccount(LookupError):
    pass


class ReplayedRequest(Exception):
    """The signed request that asks for this was accepted before."""


INSERT_KEY = sql("insert_api_key")
FIND_KEY = sql("find_api_key")
GUARD_REQUEST = sql("guard_signed_request")
LIST_KEYS = sql("api_keys_of_account")
REVOKE_KEY = sql("revoke_api_key")
ACCOUNT_ROLE = sql("account_role")


class KeyStore:
    """Create, check, list and revoke keys; ``find`` is what every signed request calls."""

    def __init__(self, pool: asyncpg.Pool, master_key: bytes, acquire_timeout: float = 5.0) -> None:
        self.pool = pool
        self.master_key = master_key
        self.acquire_timeout = acquire_timeout
        self._cache: dict[str, tuple[float, Principal, str]] = {}
        self._unknown: dict[str, float] = {}
        """Key id -> when it was found unknown or revoked."""
        self._lookups: dict[str, asyncio.Future[tuple[Principal, str] | None]] = {}
        """Key id -> its query under way (see Caching)."""

    async def create(self, account_id: int, scopes: list[str], label: str = "", request: bytes | None = None
                     ) -> tuple[KeyRow, str]:
        """Create a key; return it and its secret. Raise UnknownAccount, ScopeNotAllowed or ReplayedRequest
        (``request``: the digest of the signed request asking for it)."""
        wanted = sorted(set(scopes), key=SCOPES.index)
        key_id = "tk_" + secrets.token_hex(8)
        salt = secrets.token_bytes(32)
        refusal: Exception | None = None
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn, conn.transaction():
            # A refused request is recorded too: sent again once the account exists, it must not hand out a key.
            await _guard(conn, request)
            role = await conn.fetchval(ACCOUNT_ROLE, account_id)
            refused = set(wanted) - ROLE_SCOPES.get(role, frozenset())
            if role not in ROLE_SCOPES:
                refusal = UnknownAccount(account_id)
            elif refused:
                refusal = ScopeNotAllowed(f"a key of a {role} account may not hold {', '.join(sorted(refused))}; "
                                          f"allowed: {', '.join(sorted(ROLE_SCOPES[role]))}")
            elif INFERENCE in wanted and len(wanted) > 1:
                refusal = ScopeNotAllowed("an inference key holds the inference scope alone: its secret travels as "
                                          "a bearer token; make a second key for the other scopes")
            else:
                row = await conn.fetchrow(INSERT_KEY, key_id, account_id, wanted, salt, label, datetime.now(UTC))
        if refusal is not None:
            raise refusal
        self._unknown.pop(key_id, None)
        return KeyRow(**row), derive_secret(self.master_key, key_id, salt)

    async def find(self, key_id: str, admit: Callable[[], None] | None = None) -> tuple[Principal, str] | None:
        """The principal and secret of a live key, or None if it is unknown or revoked. ``admit`` is called
        before the database is asked, and may raise to refuse the lookup."""
        if not KEY_ID.match(key_id):
            return None
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1], cached[2]
        unknown_since = self._unknown.get(key_id)
        if unknown_since is not None and now - unknown_since < CACHE_SECONDS:
            return None
        lookup = self._lookups.get(key_id)
        if lookup is None:
            if admit is not None:
                admit()
            lookup = self._lookups[key_id] = asyncio.ensure_future(self._look_up(key_id, now))
            lookup.add_done_callback(lambda done: self._looked_up(key_id, done))
        # Shielded: a caller that leaves does not cancel the query the others wait for.
        return await asyncio.shield(lookup)

    def _looked_up(self, key_id: str, lookup: asyncio.Future) -> None:
        del self._lookups[key_id]
        if not lookup.cancelled():
            lookup.exception()  # its waiters got it; if they all left, nobody needs to hear of it again

    async def _look_up(self, key_id: str, now: float) -> tuple[Principal, str] | None:
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
            row = await conn.fetchrow(FIND_KEY, key_id)
        if row is None:
            self._cache.pop(key_id, None)
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            self._unknown[key_id] = now
            return None
        principal = Principal(key_id, row["account_id"], row["role"], frozenset(row["scopes"]))
        secret = derive_secret(self.master_key, key_id, row["salt"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, principal, secret)
        return principal, secret

    async def list(self, account_id: int) -> list[KeyRow]:
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
            return [KeyRow(**row) for row in await conn.fetch(LIST_KEYS, account_id)]

    async def revoke(self, key_id: str, account_id: int | None = None, request: bytes | None = None
                     ) -> KeyRow | None:
        """Revoke ``key_id`` (only if it belongs to ``account_id``, when given); None if there is no such key.
        Raise ReplayedRequest (``request``: the digest of the signed request asking for it)."""
        if not KEY_ID.match(key_id):
            return None
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn, conn.transaction():
            await _guard(conn, request)
            row = await conn.fetchrow(REVOKE_KEY, key_id, account_id, datetime.now(UTC))
        self._cache.pop(key_id, None)
        return None if row is None else KeyRow(**row)


async def _guard(conn: asyncpg.Connection, request: bytes | None) -> None:
    """Record ``request`` as accepted, in the caller's transaction; raise ReplayedRequest if it was already."""
    if request is not None and await conn.fetchval(GUARD_REQUEST, request, datetime.now(UTC)) is None:
        raise ReplayedRequest()
