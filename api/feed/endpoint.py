"""``/v1/ws``: one connection's life, from the handshake to the close, and the answers to its requests."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.feed.connection import Connection
from api.feed.hub import Hub
from api.feed.ladder import Ladder
from api.feed.protocol import (
    POLICY_VIOLATION,
    SYMBOL,
    Challenge,
    ErrorMessage,
    FeedError,
    GroupSubscribed,
    GroupUnsubscribed,
    IndexUpdate,
    Snapshot,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    checksum,
    encode,
    frame,
    parse,
    stream_key,
    user_target,
)
from api.schemas import price_index
from api.services import READ_ERRORS
from api.signing import TIMESTAMP, WINDOW_SECONDS, signature
from exchange.database.queries import sql

log = logging.getLogger(__name__)

GROUP_LISTED = sql("group_listed")


async def serve(hub: Hub, websocket: WebSocket, send: Send) -> None:
    """Run one connection until it closes; ``send`` is the ASGI send ``websocket`` was made with."""
    address = websocket.client.host if websocket.client else "unknown"
    await websocket.accept()
    if hub.per_address[address] + hub.per_address_elsewhere[address] >= hub.limits.max_connections_per_address:
        reason = f"too many connections from {address} (at most {hub.limits.max_connections_per_address})"
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            await websocket.send_text(frame(encode(ErrorMessage("too_many_connections", reason))))
            await asyncio.wait_for(websocket.close(POLICY_VIOLATION, reason), hub.limits.close_timeout)
        return
    connection = Connection(hub, websocket, send, address)
    hub.add(connection)
    try:
        await receive(hub, connection)
    finally:
        connection.close(1000, "")  # unless closed already
        code, reason = connection.close_reason or (1000, "")
        if code != 1000:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(close(hub, connection, code, reason), hub.limits.close_timeout)
        if connection.sending is not None:
            connection.sending.cancel()


async def close(hub: Hub, connection: Connection, code: int, reason: str) -> None:
    if connection.draining:
        await hub.handed(connection).wait()
        await connection.idle.wait()
    await connection.websocket.close(code, reason)


async def receive(hub: Hub, connection: Connection) -> None:
    websocket = connection.websocket
    done = asyncio.ensure_future(connection.done.wait())
    try:
        while connection.close_reason is None:
            receiving = asyncio.ensure_future(websocket.receive())
            await asyncio.wait((receiving, done), return_when=asyncio.FIRST_COMPLETED)
            if connection.close_reason is not None or not receiving.done():
                receiving.cancel()
                return
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                connection.close(1000, "")
                return
            hub.stats["requests"] += 1
            await handle(hub, connection, message)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        done.cancel()


async def handle(hub: Hub, connection: Connection, message: dict) -> None:
    """Answer one client message."""
    request_id = None
    try:
        text = message.get("text")
        if text is None:
            raise FeedError("malformed_message", "Send JSON in text frames.")
        if len(text) > hub.limits.max_message_bytes:
            raise FeedError("message_too_large", f"A message may be at most {hub.limits.max_message_bytes} "
                                                 "bytes.")
        if not connection.take_token():
            raise FeedError("rate_limited", f"At most {hub.limits.message_rate:g} messages a second.")
        request = parse(text)
        request_id = request.id
        if isinstance(request, Subscribe):
            await subscribe(hub, connection, request)
        elif isinstance(request, Unsubscribe):
            unsubscribe(hub, connection, request)
        else:
            hub.send(connection, encode(Challenge(connection.nonce, request.id)))
    except FeedError as error:
        refuse(hub, connection, error, request_id)
    except Exception:
        log.exception("a feed request failed")
        refuse(hub, connection, FeedError("internal_error", "The server failed to answer; nothing changed."),
               request_id)


def refuse(hub: Hub, connection: Connection, error: FeedError, request_id: int | str | None) -> None:
    connection.errors += 1
    hub.stats["errors"] += 1
    hub.send(connection, encode(ErrorMessage(error.code, error.detail, request_id)))
    if connection.errors >= hub.limits.max_errors:
        connection.close(POLICY_VIOLATION, f"{connection.errors} bad messages", drain=True)


async def subscribe(hub: Hub, connection: Connection, request: Subscribe) -> None:
    channel, symbol, interval = request.channel, request.symbol, request.interval
    key = stream_key(channel, symbol, interval, request.group)
    held = next((k for k in connection.feeds if k[:2] == key), None) if channel == "user" else key
    if held not in connection.feeds and len(connection.feeds) >= hub.limits.max_subscriptions:
        raise FeedError("too_many_subscriptions", f"At most {hub.limits.max_subscriptions} subscriptions on "
                                                  "one connection.")
    if channel == "index":
        await subscribe_index(hub, connection, key, request.id)
        return
    assert symbol is not None
    ladder = await ladder_of(hub, symbol)
    api_key = None
    if channel == "user":
        api_key, account_id = await authorize(hub, request, connection.nonce)
        if connection.close_reason is not None:
            return
        if held is not None:
            hub.unsubscribe(connection, held)  # one account's channel per instrument and connection
        key = ("user", symbol, account_id)
    first = [encode(Subscribed(channel, symbol, ladder.seq, interval, request.id))]
    if channel == "level2" and request.snapshot:
        bids, asks = ladder.levels()
        first.append(encode(Snapshot("level2", symbol, ladder.seq, ladder.ts, bids, asks,
                                     checksum(bids, asks))))
    elif channel == "ticker":
        first.append(hub.ticker(symbol, ladder))
    elif channel == "candles":
        assert interval is not None
        first.append(hub.candle(symbol, ladder, interval))
    hub.subscribe(connection, key, first)
    if api_key is not None:
        connection.keys[key] = api_key


def unsubscribe(hub: Hub, connection: Connection, request: Unsubscribe) -> None:
    key = stream_key(request.channel, request.symbol, request.interval, request.group)
    if key[0] == "user":
        key = next((k for k in connection.feeds if k[:2] == key), key)
    if key not in connection.feeds:
        raise FeedError("not_subscribed", "This connection does not subscribe to that.")
    hub.unsubscribe(connection, key)
    if key[0] == "index":
        hub.send(connection, encode(GroupUnsubscribed("index", key[1], request.id)))
        return
    assert request.symbol is not None
    hub.send(connection, encode(Unsubscribed(request.channel, request.symbol, request.interval, request.id)))


async def subscribe_index(hub: Hub, connection: Connection, key: tuple, request_id: int | str | None) -> None:
    group = key[1]
    if group not in hub.indices:
        assert hub.services is not None
        try:
            async with hub.services.connection() as conn:
                listed = await conn.fetchval(GROUP_LISTED, group)
        except READ_ERRORS:
            raise FeedError("unavailable", "The exchange cannot look that group up now; try again.") from None
        if not listed:
            raise FeedError("unknown_group", f"No compute instrument has the substitution group {group!r}; "
                                             "GET /v1/instruments shows each one's group.")
    first = [encode(GroupSubscribed("index", group, request_id))]
    newest = hub.indices.get(group)
    if newest is not None:
        first.append(encode(IndexUpdate("index", group, price_index(newest))))
    hub.subscribe(connection, key, first)


async def ladder_of(hub: Hub, symbol: str) -> Ladder:
    ladder = hub.ladders.get(symbol)
    if ladder is not None:
        return ladder
    if not SYMBOL.match(symbol):
        raise FeedError("unknown_instrument", f"No instrument {symbol!r}; list them with GET /v1/instruments.")
    assert hub.services is not None
    try:
        view = await hub.market.view_of(hub.services.connection, symbol)
    except READ_ERRORS:
        raise FeedError("unavailable", "The exchange cannot look that instrument up now; try again.") from None
    if view is None:
        raise FeedError("unknown_instrument", f"No instrument {symbol!r}; list them with GET /v1/instruments.")
    # Listed since start-up and never traded (a batch may have added it meanwhile).
    ladder = hub.ladders.get(symbol)
    if ladder is None:
        ladder = hub.ladders[symbol] = Ladder(view.seq)
    return ladder


async def authorize(hub: Hub, request: Subscribe, nonce: str) -> tuple[str, int]:
    """The key and account of a user subscription correctly signed for the connection of ``nonce``."""
    if not (request.key and request.timestamp and request.signature):
        raise FeedError("unauthenticated", "Sign the user subscription: key, timestamp and signature.")
    now = time.time()
    if not TIMESTAMP.fullmatch(request.timestamp) or abs(now - float(request.timestamp)) > WINDOW_SECONDS:
        raise FeedError("stale_timestamp", f"timestamp must be Unix seconds within {WINDOW_SECONDS} s of the "
                                           f"server's clock (now {int(now)}).")
    assert hub.services is not None
    try:
        found = await hub.services.keys.find(request.key)
    except READ_ERRORS:
        raise FeedError("unavailable", "Keys cannot be checked now; try again.") from None
    if found is not None:
        principal, secret = found
        expected = signature(secret, request.timestamp, "SUBSCRIBE", user_target(request.symbol), nonce.encode())
        if hmac.compare_digest(expected.encode(), request.signature.encode("utf-8", "replace")):
            if "read" not in principal.scopes:
                raise FeedError("insufficient_scope", "The user channel needs a key with the read scope.")
            return principal.key_id, principal.account_id
    raise FeedError("invalid_signature", "The key is unknown or revoked, or the signature does not match "
                                         "HMAC-SHA256(secret, timestamp + \"SUBSCRIBE\" + \"/v1/ws/user/\" + "
                                         "symbol + nonce), the nonce being this connection's challenge: send "
                                         "{\"type\": \"challenge\"} to get it.")


class Endpoint:
    """``/v1/ws``: an ASGI app, so that the hub sends data frames straight to the server's ``send``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        hub: Hub = websocket.app.state.feed
        await serve(hub, websocket, send)


endpoint = Endpoint()
