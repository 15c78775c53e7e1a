"""Access to datasets: a holder's grants, links to files, and the downloads they count.

Redeeming dataset tokens (``POST /v1/redemptions`` with ``terms_version``) accepts the terms shown and makes an
access grant (``api.routes.datasets``). A holder with a usable grant asks for a link to a file
(``GET /v1/dataset-files/{file_id}/link``): a URL that works without signing until it expires
(``api.download_links``). Fetching it counts a download against the account's grants (``exchange.datasets``), then
streams the file from the database.
"""

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import count
from typing import Annotated

from msgspec import Meta, Struct
from starlette.responses import StreamingResponse

from api import download_links, schemas
from api.endpoints import Call, Endpoints, id_page
from api.problems import Problem
from api.routes.datasets import Sha256
from exchange import dataset_files
from exchange.commands import Done, Download
from exchange.database.queries import sql

FILE = sql("dataset_file_by_id")
GRANTS = sql("dataset_grants_page")
USABLE = sql("has_usable_dataset_grant")
DOWNLOADS = sql("dataset_downloads_page")

access = Endpoints("datasets")

FILE_ID = {"file_id": (schemas.Id, "unknown_file")}


class Grant(Struct):
    id: Annotated[int, Meta(description="The redemption that made the grant.")]
    symbol: str
    terms_version: int
    expires_at: Annotated[datetime | None, Meta(description="Null: no time limit.")]
    downloads: Annotated[int | None, Meta(description="Downloads granted; null: any number.")]
    downloads_used: int
    created_at: datetime


class GrantPage(Struct):
    items: list[Grant]
    next_cursor: str | None


class LinkQuery(schemas.Request):
    expires_in: Annotated[int, Meta(ge=1, le=download_links.MAX_SECONDS)] = download_links.DEFAULT_SECONDS
    """Seconds the link works."""


class DownloadLink(Struct):
    url: str
    expires_at: datetime


class DownloadQuery(schemas.Request):
    account: schemas.Id
    expires: Annotated[int, Meta(ge=0, le=2**62)]
    signature: Sha256


class DatasetDownload(Struct):
    id: int
    grant_id: int
    symbol: str
    file_id: int
    name: str
    bytes: int
    created_at: datetime


class DownloadPage(Struct):
    items: list[DatasetDownload]
    next_cursor: str | None


@access.route("GET", "/v1/dataset-grants", summary="Own dataset access grants", scope="read", query=schemas.PageQuery,
                response=GrantPage, errors=("invalid_cursor",))
async def list_grants(call: Call) -> GrantPage:
    """This account's access grants, newest first, expired and spent ones included."""
    rows, next_cursor = await id_page(call, GRANTS, call.account_id)
    return GrantPage([Grant(**row) for row in rows], next_cursor)


@access.route("GET", "/v1/dataset-downloads", summary="Own dataset downloads", scope="read", query=schemas.PageQuery,
                response=DownloadPage, errors=("invalid_cursor",))
async def list_downloads(call: Call) -> DownloadPage:
    """Every download this account started, newest first: the metering of its access."""
    rows, next_cursor = await id_page(call, DOWNLOADS, call.account_id)
    return DownloadPage([DatasetDownload(**row) for row in rows], next_cursor)


@access.route("GET", "/v1/dataset-files/{file_id}/link", summary="A download link", scope="read",
                query=LinkQuery, response=DownloadLink, params=FILE_ID, errors=("unknown_file", "no_access"))
async def download_link(call: Call) -> DownloadLink:
    """A link to the file that works without signing until ``expires_at``, for an account holding a usable
    grant on its dataset. Each fetch of the link counts one download against the account's grants."""
    file_id = call.params["file_id"]
    now = time.time()
    async with call.services.connection() as conn:
        row = await conn.fetchrow(FILE, file_id)
        if row is None:
            raise Problem("unknown_file", field="file_id")
        if not await conn.fetchval(USABLE, call.account_id, row["symbol"], datetime.fromtimestamp(now, UTC)):
            raise Problem("no_access")
    expires = int(now) + call.query.expires_in
    key = download_links.link_key(call.services.keys.master_key)
    signature = download_links.sign(key, file_id, call.account_id, expires)
    base = str(call.request.base_url).rstrip("/")
    return DownloadLink(f"{base}/v1/dataset-files/{file_id}/content?account={call.account_id}&expires={expires}"
                        f"&signature={signature}", datetime.fromtimestamp(expires, UTC))


@access.route("GET", "/v1/dataset-files/{file_id}/content", summary="Download a dataset file", query=DownloadQuery,
                response=bytes, params=FILE_ID,
                errors=("invalid_link", "link_expired", "unknown_file", "no_access"))
async def download(call: Call) -> StreamingResponse:
    """The file's bytes, through a link from ``GET /v1/dataset-files/{file_id}/link`` (no signing: the link is
    the credential). The download is counted when it starts; ``Repr-Digest`` carries the SHA-256 to check."""
    file_id = call.params["file_id"]
    query: DownloadQuery = call.query
    key = download_links.link_key(call.services.keys.master_key)
    refusal = download_links.refusal(key, file_id, query.account, query.expires, query.signature, time.time())
    if refusal is not None:
        raise Problem(refusal)
    async with call.services.connection() as conn:
        row = await conn.fetchrow(FILE, file_id)
    if row is None:
        raise Problem("unknown_file", field="file_id")
    done = await call.submit(Download(query.account, row["symbol"], file_id, row["size"]))
    assert isinstance(done, Done)
    headers = {
        "Content-Length": str(row["size"]),
        "Content-Disposition": f'attachment; filename="{row["name"]}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(row['sha256']).decode()}:",
        "TOKEX-DOWNLOAD-ID": str(done.id),
    }
    return StreamingResponse(_chunks(call, file_id), media_type="application/octet-stream", headers=headers)


async def _chunks(call: Call, file_id: int) -> AsyncIterator[bytes]:
    services = call.services
    for n in count():
        data = await dataset_files.chunk(services.pool, file_id, n, services.acquire_timeout)
        if data is None:
            return
        yield data
