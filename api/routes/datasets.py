"""Datasets: their license terms and files, shown before purchase; access grants, and downloads through links.

Terms (``exchange.datasets``) are public; the dataset's issuer publishes each version. Redeeming dataset tokens
(``POST /v1/redemptions`` with ``terms_version``) accepts the version shown and makes an access grant: days,
downloads or both, per token as the terms say.

Files are public to list (name, size, SHA-256). The issuer uploads one with ``PUT`` and the raw bytes as the
body, streamed: the request is signed over an empty body with the file's SHA-256 in the query (``sha256=``), so
the signature covers the bytes through their hash and is checked before any byte is read; a body whose hash
differs is refused and nothing is stored (``exchange.dataset_files``). A file over the cap
(``TOKEX_DATASET_FILE_MAX_BYTES``) is refused from its Content-Length, or as soon as its bytes pass the cap.

A holder with a usable grant asks for a link to a file (``GET /v1/dataset-files/{file_id}/link``): a URL that
works without signing until it expires (``api.download_links``). Fetching it counts a download against the
account's grants (``exchange.datasets``), then streams the file from the database.
"""

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import count
from typing import Annotated, Literal

from msgspec import Meta, Struct
from starlette.responses import StreamingResponse

from api import download_links
from api.endpoints import Call, Endpoints, id_page
from api.problems import Problem
from api.schemas import TEXT_PATTERN, Id, PageQuery, Request, Symbol, shown, whole
from exchange import dataset_files
from exchange import datasets as terms_rules
from exchange.commands import Done, Download, PublishTerms
from exchange.config import dataset_file_max_bytes
from exchange.database.queries import sql

datasets = Endpoints("datasets")

FileName = Annotated[str, whole(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", description="A file's name in its dataset.")]
Sha256 = Annotated[str, whole(r"[0-9a-f]{64}", description="Lowercase hex SHA-256.")]
PermittedUse = Literal["research", "internal", "commercial", "model_training"]
Version = Annotated[int, Meta(ge=1, le=2**31 - 1)]

SYMBOL = {"symbol": (Symbol, "unknown_instrument")}
UPLOAD = {"symbol": (Symbol, "unknown_instrument"), "name": (FileName, "invalid_field")}
FILE_ID = {"file_id": (Id, "unknown_file")}

TERMS = sql("dataset_terms_version")
FILES = sql("dataset_files_of_instrument")
FILE = sql("dataset_file_by_id")
DATASET = sql("dataset_for_upload")
GRANTS = sql("dataset_grants_page")
USABLE = sql("has_usable_dataset_grant")
DOWNLOADS = sql("dataset_downloads_page")


class NewTerms(Request):
    """A new version of a dataset's license terms; give days, downloads or both per token."""

    permitted_use: Annotated[list[PermittedUse], Meta(min_length=1, max_length=len(terms_rules.PERMITTED_USES))]
    redistribution: bool
    text: Annotated[str, Meta(min_length=1, max_length=terms_rules.MAX_TEXT, pattern=TEXT_PATTERN)]
    attribution: Annotated[str, Meta(min_length=1, max_length=terms_rules.MAX_ATTRIBUTION,
                                     pattern=TEXT_PATTERN)] | None = None
    """The credit line users must show; null when none is required."""
    days_per_token: Annotated[int, Meta(ge=1, le=terms_rules.MAX_DAYS_PER_TOKEN)] | None = None
    """Days of access one redeemed token grants."""
    downloads_per_token: Annotated[int, Meta(ge=1, le=terms_rules.MAX_DOWNLOADS_PER_TOKEN)] | None = None
    """Downloads one redeemed token grants."""


class TermsQuery(Request):
    version: Version | None = None
    """A past version; the newest when left out."""


Terms = shown("Terms", terms_rules.Terms, ("symbol", *terms_rules.Terms.__struct_fields__[1:]), symbol=str,
              permitted_use=list[PermittedUse])
"""A version of a dataset's terms as ``exchange.datasets.Terms`` holds it, with the symbol for the instrument id."""


class UploadQuery(Request):
    sha256: Sha256
    """The SHA-256 of the body: the signature covers the bytes through it."""


class DatasetFile(Struct):
    id: int
    symbol: str
    name: str
    size: Annotated[int, Meta(description="Bytes.")]
    sha256: str
    created_at: datetime


class DatasetFileList(Struct):
    items: list[DatasetFile]


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


class LinkQuery(Request):
    expires_in: Annotated[int, Meta(ge=1, le=download_links.MAX_SECONDS)] = download_links.DEFAULT_SECONDS
    """Seconds the link works."""


class DownloadLink(Struct):
    url: str
    expires_at: datetime


class DownloadQuery(Request):
    account: Id
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


def file_from(row) -> DatasetFile:
    return DatasetFile(row["id"], row["symbol"], row["name"], row["size"], row["sha256"].hex(), row["created_at"])


async def read_terms(call: Call, symbol: str, version: int | None) -> Terms:
    async with call.services.connection() as conn:
        row = await conn.fetchrow(TERMS, symbol, version)
    if row is None:
        raise Problem("no_terms", "This dataset has no terms of that version." if version else None)
    return Terms(**row)


@datasets.route("GET", "/v1/instruments/{symbol}/terms", summary="A dataset's license terms", query=TermsQuery,
                response=Terms, params=SYMBOL, errors=("no_terms",))
async def get_terms(call: Call) -> Terms:
    """The terms a redemption accepts now (the newest version), or a past version: uses permitted,
    redistribution, attribution, the text, and what one redeemed token grants."""
    return await read_terms(call, call.params["symbol"], call.query.version)


@datasets.route("POST", "/v1/instruments/{symbol}/terms", summary="Publish a dataset's terms", scope="issue",
                body=NewTerms, response=Terms, status=201, params=SYMBOL,
                errors=("unknown_instrument", "not_a_dataset", "not_permitted", "invalid_terms"))
async def publish_terms(call: Call) -> Terms:
    """A new version of the terms of a dataset this account issues; redemptions from now on accept it.
    Grants made under earlier versions keep theirs."""
    body: NewTerms = call.body
    symbol = call.params["symbol"]
    done = await call.submit(PublishTerms(call.account_id, symbol, tuple(body.permitted_use), body.redistribution,
                                          body.attribution, body.days_per_token, body.downloads_per_token, body.text))
    assert isinstance(done, Done)
    return await read_terms(call, symbol, done.id)


@datasets.route("GET", "/v1/instruments/{symbol}/files", summary="A dataset's files", response=DatasetFileList,
                params=SYMBOL)
async def list_files(call: Call) -> DatasetFileList:
    """Every file of the dataset, oldest first: name, size and SHA-256 (to check a download against)."""
    async with call.services.connection() as conn:
        rows = await conn.fetch(FILES, call.params["symbol"])
    return DatasetFileList([file_from(row) for row in rows])


@datasets.route("PUT", "/v1/instruments/{symbol}/files/{name}", summary="Upload a dataset file", scope="issue",
                query=UploadQuery, response=DatasetFile, status=201, params=UPLOAD, stream=True,
                errors=("unknown_instrument", "not_a_dataset", "not_permitted", "file_exists", "too_many_files",
                        "file_too_large", "checksum_mismatch"))
async def upload_file(call: Call) -> DatasetFile:
    """Store a file of a dataset this account issues: the body is the file's bytes (any media type), and
    ``sha256`` their hash, which the signature covers (the signature is over an empty body). Files never change:
    a name is taken for good."""
    cap = dataset_file_max_bytes()
    too_large = Problem("file_too_large", f"A dataset file may be at most {cap} bytes.")
    length = call.request.headers.get("content-length")
    if length is not None and length.isdecimal() and int(length) > cap:
        raise too_large
    async with call.services.connection() as conn:
        dataset = await conn.fetchrow(DATASET, call.params["symbol"])
        if dataset is None:
            raise Problem("unknown_instrument", field="symbol")
        if dataset["kind"] != "dataset":
            raise Problem("not_a_dataset")
        if dataset["issuer_id"] != call.account_id:
            raise Problem("not_permitted", "Only the dataset's issuer uploads its files.")
        try:
            stored = await dataset_files.store(conn, dataset["id"], call.params["name"], call.request.stream(),
                                               bytes.fromhex(call.query.sha256), cap, datetime.now(UTC), call.signed)
        except dataset_files.Refused as refused:
            if refused.code == "file_too_large":
                raise too_large from None
            raise Problem(refused.code) from None
    return DatasetFile(stored.id, call.params["symbol"], stored.name, stored.size, stored.sha256.hex(),
                       stored.created_at)


@datasets.route("GET", "/v1/dataset-grants", summary="Own dataset access grants", scope="read", query=PageQuery,
                response=GrantPage, errors=("invalid_cursor",))
async def list_grants(call: Call) -> GrantPage:
    """This account's access grants, newest first, expired and spent ones included."""
    rows, next_cursor = await id_page(call, GRANTS, call.account_id)
    return GrantPage([Grant(**row) for row in rows], next_cursor)


@datasets.route("GET", "/v1/dataset-downloads", summary="Own dataset downloads", scope="read", query=PageQuery,
                response=DownloadPage, errors=("invalid_cursor",))
async def list_downloads(call: Call) -> DownloadPage:
    """Every download this account started, newest first: the metering of its access."""
    rows, next_cursor = await id_page(call, DOWNLOADS, call.account_id)
    return DownloadPage([DatasetDownload(**row) for row in rows], next_cursor)


@datasets.route("GET", "/v1/dataset-files/{file_id}/link", summary="A download link", scope="read",
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


@datasets.route("GET", "/v1/dataset-files/{file_id}/content", summary="Download a dataset file", query=DownloadQuery,
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
