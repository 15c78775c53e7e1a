"""Every place tokex leans on uvicorn's internals, and the check that they are still there.

uvicorn is pinned in ``pyproject.toml`` to the versions this module was tested with; ``coupling_problems`` lists
what no longer matches (``tests/api/test_uvicorn_coupling.py`` fails with that list), so an upgrade that moves
an internal fails by name rather than by a wrong byte on a socket.

What leans on what
------------------
- ``BoundedHttpToolsProtocol`` and ``CoalescingHttpToolsProtocol`` subclass uvicorn's ``HttpToolsProtocol``
  (its parser callbacks, ``url``, ``headers``, ``transport``): a cap on a request's head, and one write per
  response.
- ``DrainingWebSocketProtocol`` subclasses uvicorn's ``WebSocketsSansIOProtocol`` (``conn``, ``queue``,
  ``transport``, ``loop``, ``close_timeout``, ``close_sent``, ``handle_parser_exception``) so that a client
  whose message was too large reads why.
- ``write_frame`` writes a ready WebSocket frame straight to the sans-I/O protocol's transport, checking its
  state (``handshake_complete``, ``close_sent``, ``disconnected``, ``writable``, ``conn.state``); the server's
  ``send`` reaches it through ``KeepServerSend``, which keeps it in the scope before the layers below wrap it.
- ``send_eagerly`` drives a ``send`` coroutine by hand and sets asyncio's ``_asyncio_future_blocking`` on what it
  yields, as a task would.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from api.problems import Problem

MAX_HEAD_BYTES = 32 * 1024
"""A request's line and headers together; a longer head is answered 431 and its connection closed."""
SERVER_SEND = "tokex.server_send"
WS_OPEN = State.OPEN


class CoalescingTransport:
    """A transport whose writes during one turn of the event loop leave as one write.

    uvicorn writes an HTTP response's head and its body apart, and every write is a system call (what one costs
    is in ``loadtest/README.md``). Writes are joined and handed to the
    real transport once the current callbacks are done; closing writes what is pending first. Everything
    else is the real transport's.
    """

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        """The real one."""
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending = []
            self.transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending = []
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on a request's head: ``MAX_HEAD_BYTES``.

    httptools has no cap of its own: it gathers a header's name and value in memory however long they grow (100
    MiB of one header was read whole, and answered). A head is measured twice: a complete one by what was parsed
    (before the app or a WebSocket upgrade sees it), and one still arriving by the bytes read since it began, so
    a head that never ends costs at most the cap and a read or two. Either way over the cap is a 431 problem
    and a closed connection; nothing of that request runs.
    """

    head_bytes: int | None = None
    """Bytes of the current head read after the read it began in; None while no head is being read."""
    head_began: bool = False
    refused: bool = False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.head_began = False
        super().data_received(data)
        # The read a head begins in may end the previous request, so it is not counted; a later read that
        # leaves the head unfinished is all head.
        if self.head_bytes is not None and not self.head_began and not self.refused:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self.head_began = True

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        if self.refused:
            return
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            self.refuse_head()
            return
        super().on_headers_complete()

    # What the parser reports after a refusal, until the end of the read it came in, belongs to no request.

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        if not self.refused:
            super().handle_websocket_upgrade()

    def refuse_head(self) -> None:
        self.refused = True
        problem = Problem("headers_too_large", f"The request line and headers may be at most {MAX_HEAD_BYTES} "
                                               "bytes together.").response()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in problem.raw_headers]
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + problem.body)
        self.transport.close()


class CoalescingHttpToolsProtocol(BoundedHttpToolsProtocol):
    """The bounded httptools protocol on a ``CoalescingTransport``: one write per response. A connection upgraded to
    a WebSocket gets the real transport back: the feed writes one ready frame per subscriber per flush
    (``write_frame``), which has nothing to join, and the load run measured no gain from it."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport))  # type: ignore[arg-type]

    def handle_websocket_upgrade(self) -> None:
        coalescing: CoalescingTransport = self.transport  # type: ignore[assignment]
        coalescing.flush()
        self.transport = coalescing.transport
        super().handle_websocket_upgrade()


class DrainingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, which, once it fails a connection (a frame or message over
    ``ws_max_size``: 1009; text that is not UTF-8: 1007), lets the client read why.

    uvicorn sends the close frame and closes the socket at once; with the rest of the client's frame still unread,
    the kernel answers with a reset, which can overtake the close frame, and the client sees its connection
    dropped without a reason. Here the close frame is followed by an EOF, what the client still sends is read and
    dropped unparsed, and the socket closes when the client closes its side, or after ``close_timeout``.
    """

    failed: bool = False

    def data_received(self, data: bytes) -> None:
        if not self.failed:
            super().data_received(data)

    def handle_parser_exception(self) -> None:
        self.failed = True
        close = self.conn.close_sent
        assert close is not None
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        # The transport closes itself on the client's EOF (``eof_received`` returns None).
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)


def wire_frame(text: str) -> bytes:
    """``text`` as one final, unmasked WebSocket text frame, as a server writes it (no extensions: per-message
    compression is off)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def direct_protocol(scope: Scope) -> WebSocketsSansIOProtocol | None:
    """uvicorn's sans-I/O WebSocket protocol behind a WebSocket's ``scope``, when the server is that
    (``KeepServerSend``); else None."""
    server_send = getattr(scope.get(SERVER_SEND), "__self__", None)
    return server_send if isinstance(server_send, WebSocketsSansIOProtocol) else None


def write_frame(protocol: WebSocketsSansIOProtocol | None, wire: bytes) -> bool:
    """Write a ready frame straight to the socket, if the connection is open and its buffer has room.

    The feed sends the very same frame to every subscriber of the same streams: made once (``wire_frame``)
    and written as it is, it skips the server's per-send framing, which was most of the feed's cost. This
    needs the sans-I/O protocol's state (handshake done, no close sent, buffer not full), so any other server
    or state takes the ASGI ``send`` instead, which waits when it must.
    """
    if (protocol is None or not protocol.handshake_complete or protocol.close_sent or protocol.disconnected
            or not protocol.writable.is_set() or protocol.conn.state is not WS_OPEN
            or protocol.transport.is_closing()):
        return False
    protocol.transport.write(wire)
    return True


def send_eagerly(send: Send, message: dict) -> asyncio.Task | None:
    """Run ``send(message)`` now, in the caller's task; None when it finished, else the task that finishes it.

    A send finishes at once unless the connection's write buffer is full, so a task per send would only cost
    time: this is what Python 3.12 calls an eager task start, done by hand.
    """
    coroutine = send(message)
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coroutine, waiting))


async def _resume(coroutine, waiting) -> None:
    """Drive a coroutine that yielded ``waiting`` on to its end."""
    try:
        while True:
            try:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    waiting._asyncio_future_blocking = False  # taken in hand, as a task does with what it is yielded
                    await waiting
            except BaseException as exc:  # cancelled, most likely: let the coroutine clean up
                waiting = coroutine.throw(exc)
                continue
            waiting = coroutine.send(None)
    except StopIteration:
        return


class KeepServerSend:
    """ASGI middleware, outermost: keeps the server's own ``send`` of a WebSocket in its scope (``SERVER_SEND``),
    since the layers below wrap it, so that the feed can reach the protocol behind it (``write_frame``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


HTTP_METHODS = ("data_received", "on_message_begin", "on_headers_complete", "on_body", "on_message_complete",
                "handle_websocket_upgrade", "connection_made")
HTTP_ATTRIBUTES = ("url", "headers", "transport")
WEBSOCKET_METHODS = ("data_received", "handle_parser_exception")
WEBSOCKET_ATTRIBUTES = ("conn", "queue", "transport", "loop", "close_timeout", "close_timer", "close_sent",
                        "handshake_complete", "disconnected", "writable")
TESTED = ((0, 55), (0, 56))
"""uvicorn's versions this module was tested with: at least the first, below the second (as pinned)."""


def coupling_problems(version: str) -> list[str]:
    """What no longer holds of uvicorn's internals that this module uses, under uvicorn ``version``; empty when
    all does."""
    problems = []
    release = tuple(int(part) for part in version.split(".")[:2])
    if not TESTED[0] <= release < TESTED[1]:
        problems.append(f"uvicorn {version} is outside the tested range {TESTED}: check each item below against "
                        "its source, then widen TESTED and the pin in pyproject.toml")
    for cls, methods, attributes in ((HttpToolsProtocol, HTTP_METHODS, HTTP_ATTRIBUTES),
                                     (WebSocketsSansIOProtocol, WEBSOCKET_METHODS, WEBSOCKET_ATTRIBUTES)):
        problems += [f"{cls.__qualname__}.{name}() is gone" for name in methods
                     if not callable(getattr(cls, name, None))]
        source = inspect.getsource(cls)
        problems += [f"{cls.__qualname__} no longer sets self.{name}" for name in attributes
                     if f"self.{name} =" not in source and f"self.{name}:" not in source]
    if not hasattr(asyncio.Future, "_asyncio_future_blocking"):
        problems.append("asyncio.Future has no _asyncio_future_blocking (send_eagerly)")
    return problems
