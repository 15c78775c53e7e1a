"""Signed requests the exchange has already accepted, remembered while they could still be sent again.

A gateway accepts a signed request only while its timestamp is within the signing window of its clock
(``api.signing.WINDOW_SECONDS`` either way), so a request can arrive at most two windows after the first copy
of it was accepted. The guard must remember a request at least that long; ``REMEMBER_SECONDS`` is more, to allow
for gateways whose clocks differ a little.

The truth is the ``signed_request`` table: each accepted request's digest is committed in the same batch as the
command's effects, so it survives a restart, and a reloaded engine reads it back. In memory, two generations of
digests are kept, each ``REMEMBER_SECONDS`` long: a digest is found for at least ``REMEMBER_SECONDS`` and at most
twice that, with no per-digest timestamps to keep and one dict lookup per command.

Each digest keeps the encoded result of its request (``exchange.commands.encode_result``), in memory and in its
row. A gateway that lost the answer to a command (its engine died, or did not answer in time) sends it again
marked as a retry; the engine answers a retry whose digest it knows with the original result instead of refusing
it, so a command that committed before a failover is answered as it was, and never runs twice. The same bytes sent
again by a client are no retry and are refused as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

REMEMBER_SECONDS = 40
"""How long an accepted request is remembered at least; over twice the signing window."""
KEEP_ROWS_SECONDS = 2 * REMEMBER_SECONDS
"""Rows older than this are deleted: they are no longer needed to refuse a replay."""
_GENERATION_US = REMEMBER_SECONDS * 1_000_000


def digest(signature: str) -> bytes:
    """What the guard remembers of a request: 16 bytes of SHA-256 of its signature (which covers the key and
    every signed byte), so that the stored rows cannot be sent as signatures."""
    return hashlib.sha256(signature.encode("ascii", "replace")).digest()[:16]


class RecentRequests:
    """Digests of accepted requests and their results, in memory; ``add`` as they are accepted, ``in`` to refuse a
    replay, ``result`` to answer a retry."""

    __slots__ = ("_current", "_previous", "_started")

    def __init__(self) -> None:
        self._current: dict[bytes, bytes | None] = {}
        self._previous: dict[bytes, bytes | None] = {}
        self._started: int | None = None
        """When the current generation began (microseconds since the epoch)."""

    def __contains__(self, request: bytes) -> bool:
        return request in self._current or request in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def result(self, request: bytes) -> bytes | None:
        """The encoded result of ``request``; None if it is not remembered, or was stored without one."""
        found = self._current.get(request)
        return found if found is not None else self._previous.get(request)

    def extend(self, requests: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Remember requests accepted before a restart, with their results (the recent rows of ``signed_request``)."""
        self._current.update(requests)

    def add(self, request: bytes, ts: int, result: bytes) -> bool:
        """Remember ``request``, accepted at ``ts``, and its encoded result; True when a generation was just dropped
        (old rows may go)."""
        rotated = False
        if self._started is None:
            self._started = ts
        elif ts - self._started >= _GENERATION_US:
            self._previous, self._current = self._current, {}
            self._started = ts
            rotated = True
        self._current[request] = result
        return rotated
