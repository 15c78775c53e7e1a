"""A dataset's files, kept in the database in chunks, so that every server of a cluster can serve them.

Uploading
---------
``store`` reads the body as it arrives and writes it in chunks of ``CHUNK_BYTES``, hashing it on the way, all in
one transaction: at most one chunk is in memory, and a file over ``max_bytes`` is refused as soon as its bytes
pass the cap. The uploader states the file's SHA-256 before sending it (and signs that statement); a body whose
hash differs is refused. A refusal rolls the whole transaction back: nothing of the file remains. Files never
change once stored (a dataset's buyers accepted its terms with these files), so a name is taken for good.

Files are not ledger state and their bytes never pass through the sequencer; the upload records the digest of
its signed request in its own transaction (as ``api.keys`` does), so a replayed upload is refused.

Reading
-------
``chunk`` reads one chunk, on a connection taken for just that chunk: a slow client holds no connection while
it receives what it was sent.
"""

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import msgspec

from exchange.database.queries import sql

CHUNK_BYTES = 1 << 20
MAX_FILES = 1000
"""Files of one dataset."""

GUARD_REQUEST = sql("guard_signed_request")
COUNT_FILES = sql("dataset_file_count")
INSERT_FILE = sql("insert_dataset_file")
INSERT_CHUNK = sql("insert_dataset_chunk")
FINISH_FILE = sql("finish_dataset_file")
CHUNK = sql("dataset_chunk")


class DatasetFile(msgspec.Struct):
    """A row of ``dataset_file``."""

    id: int
    instrument_id: int
    name: str
    size: int
    sha256: bytes
    created_at: datetime


class Refused(Exception):
    """Nothing was stored, because of ``code``: ``file_too_large``, ``checksum_mismatch``, ``file_exists``,
    ``too_many_files`` or ``replayed_request``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def store(conn: asyncpg.Connection, instrument_id: int, name: str, body: AsyncIterator[bytes], sha256: bytes,
                max_bytes: int, at: datetime, request: bytes | None = None) -> DatasetFile:
    """Store the file ``name`` of a dataset from ``body``; raise ``Refused`` and store nothing when it cannot be."""
    async with conn.transaction():
        if request is not None and await conn.fetchval(GUARD_REQUEST, request, at) is None:
            raise Refused("replayed_request")
        if await conn.fetchval(COUNT_FILES, instrument_id) >= MAX_FILES:
            raise Refused("too_many_files")
        try:
            file_id = await conn.fetchval(INSERT_FILE, instrument_id, name, sha256, at)
        except asyncpg.UniqueViolationError:
            raise Refused("file_exists") from None
        digest = hashlib.sha256()
        size = 0
        n = 0
        pending = bytearray()
        async for part in body:
            size += len(part)
            if size > max_bytes:
                raise Refused("file_too_large")
            digest.update(part)
            pending += part
            while len(pending) >= CHUNK_BYTES:
                await conn.execute(INSERT_CHUNK, file_id, n, bytes(pending[:CHUNK_BYTES]))
                del pending[:CHUNK_BYTES]
                n += 1
        if pending:
            await conn.execute(INSERT_CHUNK, file_id, n, bytes(pending))
        if digest.digest() != sha256:
            raise Refused("checksum_mismatch")
        row = await conn.fetchrow(FINISH_FILE, file_id, size)
    return DatasetFile(**row)


async def chunk(pool: asyncpg.Pool, file_id: int, n: int, timeout: float) -> bytes | None:
    """Chunk ``n`` of a file, or None past its end."""
    async with pool.acquire(timeout=timeout) as conn:
        return await conn.fetchval(CHUNK, file_id, n)
