"""Signed requests the exchange has already accepted, remembered while they could still be sent again.

A gateway accepts a signed request only while its timestamp is within the signing window of its clock
(``api.signing.WINDOW_SECONDS`` either way), so a request can arrive at most two windows after the first copy
of it was accepted. The guard must remember a request at least that long; ``REMEMBER_SECONDS`` is more, to allow
for gateways whose clocks differ a little.

The truth is the ``signed_request`` table: each accepted request's digest is committed in the same batch as the
command's effects, so it survives a restart, and a reloaded engine reads it back. In memory, two generations of
digests are kept, each ``REMEMBER_SECONDS`` long: a digest is found for at least ``REMEMBER_SECONDS`` and at most
twice that, with no per-digest timestamps to keep and one dict lookup per command.

Each digest keeps the encoded result of its request (``exchange.commands.encode_result``) in its row, and in
memory for ``RESULT_SECONDS`` to twice that. A gateway that lost the answer to a command (its engine died, or did
not answer in time) sends it again marked as a retry, for at most ``exchange.broker.commands``' retry deadline;
the engine answers a retry whose digest it knows with the original result instead of refusing it, so a command
that committed before a failover is answered as it was, and never runs twice. The same bytes sent again by a
client are no retry and are refused as before. Results are kept a shorter time than digests because they are
ten times larger and a retry comes within seconds: at 20,000 commands a second, two 10 s generations of results
are about 60 MB, where two 40 s generations would be four times that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

REMEMBER_SECONDS = 40
"""How long an accepted request is remembered at least; over twice the signing window."""
KEEP_ROWS_SECONDS = 2 * REMEMBER_SECONDS
"""Rows older than this are deleted: they are no longer needed to refuse a replay."""
RESULT_SECONDS = 10
"""How long a result is kept in memory at least; longer than a gateway retries (``exchange.broker.commands``)."""
_GENERATION_US = REMEMBER_SECONDS * 1_000_000
_RESULT_GENERATION_US = RESULT_SECONDS * 1_000_000


def digest(signature: str) -> bytes:
    """What the guard remembers of a request: 16 bytes of SHA-256 of its signature (which covers the key and
    every signed byte), so that the stored rows cannot be sent as signatures."""
    return hashlib.sha256(signature.encode("ascii", "replace")).digest()[:16]


class RecentRequests:
    """Digests of accepted requests and their results, in memory; ``add`` as they are accepted, ``in`` to refuse a
    replay, ``result`` to answer a retry."""

    __slots__ = ("_current", "_older_results", "_previous", "_results", "_results_started", "_started")

    def __init__(self) -> None:
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._started: int | None = None
        """When the current generation of digests began (microseconds since the epoch)."""
        self._results: dict[bytes, bytes] = {}
        self._older_results: dict[bytes, bytes] = {}
        self._results_started: int | None = None

    def __contains__(self, request: bytes) -> bool:
        return request in self._current or request in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def result(self, request: bytes) -> bytes | None:
        """The encoded result of ``request``; None if it is not remembered, or no longer."""
        found = self._results.get(request)
        return found if found is not None else self._older_results.get(request)

    def extend(self, requests: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Remember requests accepted before a restart, with their results (the recent rows of ``signed_request``);
        the results go with the next generation of results."""
        for request, result in requests:
            self._current.add(request)
            if result is not None:
                self._results[request] = result

    def add(self, request: bytes, ts: int, result: bytes) -> bool:
        """Remember ``request``, accepted at ``ts``, and its encoded result; True when a generation of digests was
        just dropped (old rows may go)."""
        if self._results_started is None or ts - self._results_started >= _RESULT_GENERATION_US:
            self._older_results, self._results = self._results, {}
            self._results_started = ts
        self._results[request] = result
        rotated = False
        if self._started is None:
            self._started = ts
        elif ts - self._started >= _GENERATION_US:
            self._previous, self._current = self._current, set()
            self._started = ts
            rotated = True
        self._current.add(request)
        return rotated
