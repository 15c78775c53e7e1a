"""Datasets: their license terms and files, shown before purchase (access to them: ``api.routes.dataset_access``).

Terms (``exchange.datasets``) are public; the dataset's issuer publishes each version. Redeeming dataset tokens
(``POST /v1/redemptions`` with ``terms_version``) accepts the version shown and makes an access grant: days,
downloads or both, per token as the terms say.

Files are public to list (name, size, SHA-256). The issuer uploads one with ``PUT`` and the raw bytes as the
body, streamed: the request is signed over an empty body with the file's SHA-256 in the query (``sha256=``), so
the signature covers the bytes through their hash and is checked before any byte is read; a body whose hash
differs is refused and nothing is stored (``exchange.dataset_files``). A file over the cap
(``TOKEX_DATASET_FILE_MAX_BYTES``) is refused from its Content-Length, or as soon as its bytes pass the cap.

"""

from datetime import UTC, datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints
from api.problems import Problem
from exchange import dataset_files
from exchange import datasets as terms_rules
from exchange.commands import Done, PublishTerms
from exchange.config import dataset_file_max_bytes
from exchange.database.queries import sql

datasets = Endpoints("datasets")

FileName = Annotated[str, schemas.whole(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
                                        description="A file's name in its dataset.")]
Sha256 = Annotated[str, schemas.whole(r"[0-9a-f]{64}", description="Lowercase hex SHA-256.")]
PermittedUse = Literal["research", "internal", "commercial", "model_training"]
Version = Annotated[int, Meta(ge=1, le=2**31 - 1)]

SYMBOL = {"symbol": (schemas.Symbol, "unknown_instrument")}
UPLOAD = {"symbol": (schemas.Symbol, "unknown_instrument"), "name": (FileName, "invalid_field")}

TERMS = sql("dataset_terms_version")
FILES = sql("dataset_files_of_instrument")
DATASET = sql("dataset_for_upload")


class NewTerms(schemas.Request):
    """A new version of a dataset's license terms; give days, downloads or both per token."""

    permitted_use: Annotated[list[PermittedUse], Meta(min_length=1, max_length=len(terms_rules.PERMITTED_USES))]
    redistribution: bool
    text: Annotated[str, Meta(min_length=1, max_length=terms_rules.MAX_TEXT, pattern=schemas.TEXT_PATTERN)]
    attribution: Annotated[str, Meta(min_length=1, max_length=terms_rules.MAX_ATTRIBUTION,
                                     pattern=schemas.TEXT_PATTERN)] | None = None
    """The credit line users must show; null when none is required."""
    days_per_token: Annotated[int, Meta(ge=1, le=terms_rules.MAX_DAYS_PER_TOKEN)] | None = None
    """Days of access one redeemed token grants."""
    downloads_per_token: Annotated[int, Meta(ge=1, le=terms_rules.MAX_DOWNLOADS_PER_TOKEN)] | None = None
    """Downloads one redeemed token grants."""


class TermsQuery(schemas.Request):
    version: Version | None = None
    """A past version; the newest when left out."""


Terms = schemas.shown("Terms", terms_rules.Terms, ("symbol", *terms_rules.Terms.__struct_fields__[1:]), symbol=str,
              permitted_use=list[PermittedUse])
"""A version of a dataset's terms as ``exchange.datasets.Terms`` holds it, with the symbol for the instrument id."""


class UploadQuery(schemas.Request):
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
