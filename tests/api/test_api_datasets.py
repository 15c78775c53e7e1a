"""Dataset tokens deliver data, over HTTP against a live server: terms before purchase, redemptions that accept
them and grant access, files uploaded under a cap and downloaded through expiring signed links, and the ledger's
check of it all."""

import hashlib
import os
import time
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from api import download_links
from api.client import ApiError, Client
from exchange.dataset_files import CHUNK_BYTES
from tests.support.api_server import unique

TERMS = {"permitted_use": ["research", "internal"], "redistribution": False, "attribution": "Steel QC Ltd.",
         "text": "Use for research and internal analysis only. Do not share the data."}
DATA = os.urandom(2 * CHUNK_BYTES + 12_345)
"""Three chunks, the last one short."""


@pytest.fixture
async def dataset(admin: Client, new_account):
    """A dataset whose issuer has published terms (3 downloads per token) and uploaded one file, and a buyer
    holding 4 of its tokens: (symbol, issuer, buyer, the file)."""
    symbol = unique("DS").upper()
    issuer_account, issuer = await new_account("issuer", cash="10")
    await admin.create_instrument(kind="dataset", symbol=symbol, tick="0.01", issuer_id=issuer_account["id"],
                                  description="steel quality records", license="see terms", grants="1,000 records",
                                  supply_cap=100)
    await admin.approve_issuer(issuer_account["id"], symbol, 100)
    await issuer.mint(symbol, 10)
    await issuer.publish_terms(symbol, downloads_per_token=3, **TERMS)
    stored = await issuer.upload_file(symbol, "records.parquet", DATA)
    _, buyer = await new_account(cash="100")
    await issuer.place_order(symbol, "sell", price="2.00", qty=4)
    await buyer.place_order(symbol, "buy", price="2.00", qty=4)
    return symbol, issuer, buyer, stored


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


def with_query(url: str, **changes: object) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query.update({name: str(value) for name, value in changes.items()})
    return parts._replace(query=urlencode(query)).geturl()


async def test_terms_are_public_and_versioned_and_a_redemption_accepts_the_current_one(live, dataset):
    symbol, issuer, buyer, _ = dataset
    async with Client(live.url) as public:
        shown = await public.terms(symbol)
    assert shown["version"] == 1 and shown["permitted_use"] == ["research", "internal"]
    assert (shown["redistribution"], shown["attribution"], shown["downloads_per_token"], shown["days_per_token"]) \
        == (False, "Steel QC Ltd.", 3, None)

    with pytest.raises(ApiError) as refused:
        await buyer.redeem(symbol, 1)
    assert (refused.value.status, refused.value.code, refused.value.field) == (422, "terms_not_accepted",
                                                                               "terms_version")
    second = await issuer.publish_terms(symbol, permitted_use=["commercial"], redistribution=True,
                                        text="Any use, with credit.", days_per_token=30)
    assert second["version"] == 2 and (await buyer.terms(symbol, version=1)) == shown
    with pytest.raises(ApiError) as refused:
        await buyer.redeem(symbol, 1, terms_version=1)
    assert (refused.value.status, refused.value.code) == (409, "terms_changed")
    assert (await buyer.balances())[symbol]["available"] == "4"

    redemption = await buyer.redeem(symbol, 2, terms_version=2)
    [grant] = (await buyer.dataset_grants())["items"]
    assert (grant["id"], grant["symbol"], grant["terms_version"], grant["downloads"]) == \
        (redemption["id"], symbol, 2, None)
    assert datetime.fromisoformat(grant["expires_at"]) - datetime.fromisoformat(grant["created_at"]) == \
        timedelta(days=2 * 30)
    assert await live.problems() == []


async def test_only_the_issuer_publishes_terms_and_bad_terms_change_nothing(dataset, new_account):
    symbol, issuer, buyer, _ = dataset
    with pytest.raises(ApiError) as refused:
        await buyer.publish_terms(symbol, downloads_per_token=1, **TERMS)
    assert refused.value.code == "insufficient_scope"
    _, rival = await new_account("issuer")
    with pytest.raises(ApiError) as refused:
        await rival.publish_terms(symbol, downloads_per_token=1, **TERMS)
    assert (refused.value.status, refused.value.code) == (403, "not_permitted")
    with pytest.raises(ApiError) as refused:
        await issuer.publish_terms(symbol, **TERMS)
    assert (refused.value.status, refused.value.code) == (422, "invalid_terms")
    assert (await issuer.terms(symbol))["version"] == 1


async def test_downloads_go_through_signed_links_and_are_metered(live, dataset):
    symbol, _, buyer, stored = dataset
    assert stored["size"] == len(DATA) and stored["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert [f["name"] for f in await buyer.dataset_files(symbol)] == ["records.parquet"]
    with pytest.raises(ApiError) as refused:
        await buyer.download_link(stored["id"])
    assert (refused.value.status, refused.value.code) == (403, "no_access")

    await buyer.redeem(symbol, 1, terms_version=1)  # three downloads
    link = await buyer.download_link(stored["id"], expires_in=60)
    for _ in range(3):
        response = await fetch(link["url"])
        assert response.status_code == 200 and response.content == DATA
        assert response.headers["repr-digest"].startswith("sha-256=:")
    refused_fetch = await fetch(link["url"])
    assert (refused_fetch.status_code, refused_fetch.json()["code"]) == (403, "no_access")
    [grant] = (await buyer.dataset_grants())["items"]
    assert (grant["downloads"], grant["downloads_used"]) == (3, 3)
    downloads = (await buyer.dataset_downloads())["items"]
    assert [(d["grant_id"], d["file_id"], d["bytes"]) for d in downloads] == \
        [(grant["id"], stored["id"], len(DATA))] * 3
    with pytest.raises(ApiError) as refused:
        await buyer.download_link(stored["id"])
    assert refused.value.code == "no_access"
    assert await live.problems() == []


async def test_tampered_and_expired_links_are_refused_and_count_nothing(live, dataset, new_account):
    symbol, _, buyer, stored = dataset
    await buyer.redeem(symbol, 1, terms_version=1)
    link = (await buyer.download_link(stored["id"]))["url"]
    other, _ = await new_account()
    account = int(parse_qs(urlsplit(link).query)["account"][0])
    tampered = [
        with_query(link, account=other["id"]),
        with_query(link, expires=int(time.time()) + 3000),
        with_query(link, signature="0" * 64),
        link.replace(f"/dataset-files/{stored['id']}/", f"/dataset-files/{stored['id'] + 1}/"),
    ]
    for url in tampered:
        response = await fetch(url)
        assert (response.status_code, response.json()["code"]) == (403, "invalid_link"), url

    key = download_links.link_key(live.master_key)
    expires = int(time.time()) - 1
    expired = with_query(link, expires=expires, signature=download_links.sign(key, stored["id"], account, expires))
    response = await fetch(expired)
    assert (response.status_code, response.json()["code"]) == (410, "link_expired")
    assert (await buyer.dataset_downloads())["items"] == []


async def test_the_file_cap_is_enforced_before_and_while_reading(dataset, monkeypatch):
    symbol, issuer, _, _ = dataset
    monkeypatch.setenv("TOKEX_DATASET_FILE_MAX_BYTES", "1000")
    with pytest.raises(ApiError) as refused:
        await issuer.upload_file(symbol, "big.bin", b"x" * 1001)  # refused from its Content-Length
    assert (refused.value.status, refused.value.code) == (413, "file_too_large")

    async def streamed():
        for _ in range(3):
            yield b"y" * 400

    with pytest.raises(ApiError) as refused:
        await issuer.upload_file(symbol, "big.bin", streamed(), sha256=hashlib.sha256(b"y" * 1200).hexdigest())
    assert (refused.value.status, refused.value.code) == (413, "file_too_large")
    assert [f["name"] for f in await issuer.dataset_files(symbol)] == ["records.parquet"]
    assert (await issuer.upload_file(symbol, "big.bin", b"z" * 1000))["size"] == 1000


async def test_a_body_that_is_not_the_signed_hash_stores_nothing(dataset, new_account):
    symbol, issuer, _, _ = dataset
    with pytest.raises(ApiError) as refused:
        await issuer.upload_file(symbol, "notes.txt", b"the real bytes", sha256=hashlib.sha256(b"others").hexdigest())
    assert (refused.value.status, refused.value.code) == (422, "checksum_mismatch")
    with pytest.raises(ApiError) as refused:
        await issuer.upload_file(symbol, "records.parquet", b"again")
    assert (refused.value.status, refused.value.code) == (409, "file_exists")
    _, rival = await new_account("issuer")
    with pytest.raises(ApiError) as refused:
        await rival.upload_file(symbol, "notes.txt", b"not mine")
    assert (refused.value.status, refused.value.code) == (403, "not_permitted")
    assert [f["name"] for f in await issuer.dataset_files(symbol)] == ["records.parquet"]


async def test_a_replayed_upload_is_refused(dataset):
    symbol, issuer, _, _ = dataset
    data = b"replayed bytes"
    first = await issuer.upload(f"/v1/instruments/{symbol}/files/once.txt?sha256={hashlib.sha256(data).hexdigest()}",
                                data)
    assert first.status_code == 201
    same = httpx.Request("PUT", first.request.url, headers=first.request.headers, content=data)
    again = await issuer.http.send(same, auth=None)
    assert (again.status_code, again.json()["code"]) == (409, "replayed_request")
