"""One WebSocket of the feed, and the streams it subscribes to."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from starlette.types import Send
from starlette.websockets import WebSocket

from api.feed.protocol import SLOW_CONSUMER
from api.ratelimit import RateLimiter
from api.uvicorn_coupling import direct_protocol, send_eagerly, write_frame

if TYPE_CHECKING:
    from api.feed.hub import Hub


class Group:
    """Connections whose frames are built and handed over together: the hub goes through the groups in turn, and
    each takes the messages queued up to when its turn comes (``Hub.flush_group``)."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0


class Feed:
    """One stream: a channel of an instrument (and an interval or an account); its subscribers, by group, and the
    messages queued that some group has yet to take.

    ``log`` holds the messages queued since every group last took all of them; ``taken[group]`` counts those that
    ``group`` has made into frames, and ``behind`` the groups that have not taken them all. Once none is behind,
    the log starts empty again."""

    __slots__ = ("behind", "key", "log", "members", "taken")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.members: dict[Group, set[Connection]] = {}
        self.log: list[str] = []
        self.taken: dict[Group, int] = {}
        self.behind = 0

    @property
    def subscribed(self) -> bool:
        return bool(self.members)

    def add(self, connection: Connection) -> None:
        group = connection.group
        members = self.members.get(group)
        if members is None:
            members = self.members[group] = set()
            self.taken[group] = len(self.log)  # what was queued before it joined is not its own
        members.add(connection)

    def remove(self, connection: Connection) -> None:
        group = connection.group
        members = self.members.get(group)
        if members is None or connection not in members:
            return
        members.discard(connection)
        if not members:
            del self.members[group]
            if self.taken.pop(group) < len(self.log):
                self.behind -= 1

    def append(self, message: str) -> None:
        self.log.append(message)
        self.behind = len(self.members)

    def restart(self) -> None:
        """Start the log again, empty: every group has taken it all."""
        self.log = []
        self.taken = dict.fromkeys(self.taken, 0)
        self.behind = 0


class Connection:
    """One WebSocket: its subscriptions and the frames it is owed, sent in order, at most one send at a time."""

    __slots__ = ("address", "budget", "close_reason", "done", "draining", "errors", "feeds", "group", "hub", "idle",
                 "keys", "nonce", "protocol", "queue", "queued", "send", "sending", "websocket")

    def __init__(self, hub: Hub, websocket: WebSocket, send: Send, address: str) -> None:
        self.hub = hub
        self.websocket = websocket
        self.send = send
        """The server's ASGI ``send``: data frames go to it without starlette's per-message checks."""
        self.protocol = direct_protocol(websocket.scope)
        """uvicorn's sans-I/O WebSocket protocol, when the server is that: see ``uvicorn_coupling.write_frame``."""
        self.address = address
        self.group: Group | None = None
        """The hub's delivery group, once the hub has taken the connection in (``Hub.add``)."""
        self.feeds: dict[tuple, Feed] = {}
        self.keys: dict[tuple, str] = {}
        """user feed key -> the API key that authorized it"""
        self.queue: list[str] = []
        """Frames waiting while a send is blocked (the peer reads slower than it is sent to)."""
        self.queued = 0
        self.sending: asyncio.Task | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.done = asyncio.Event()
        self.close_reason: tuple[int, str] | None = None
        self.draining = False
        self.errors = 0
        self.budget = RateLimiter(hub.limits.message_rate, hub.limits.message_burst, name="connection")
        """The messages this connection may send: one bucket, under the key None."""
        self.nonce = secrets.token_hex(16)
        """This connection's challenge: user subscriptions sign it, so that they are good on no other."""

    def put(self, text: str | asyncio.Event, wire: bytes | None = None) -> None:
        """Send one frame now, or queue it behind a send that waits; overflowing the queue closes the connection.
        ``wire`` is the frame as ``wire_frame`` makes it, when the caller has it. An event instead of a frame is
        set: everything queued for the connection before it has been put."""
        if type(text) is not str:
            text.set()
            return
        if self.close_reason is not None and not self.draining:
            return
        if self.sending is None:
            if wire is None or not write_frame(self.protocol, wire):
                self._start(text)
            return
        queue = self.queue
        queue.append(text)
        self.queued += len(text)
        limits = self.hub.limits
        if len(queue) > limits.max_queue or self.queued > limits.max_queue_bytes:
            self.hub.stats["slow_consumer_closes"] += 1
            self.close(SLOW_CONSUMER, f"slow consumer: {len(queue)} frames ({self.queued} bytes) waiting; "
                                      "reconnect and resync")

    def _start(self, text: str) -> None:
        try:
            waiting = send_eagerly(self.send, {"type": "websocket.send", "text": text})
        except (OSError, RuntimeError):
            self.close(1000, "")
            return
        if waiting is not None:
            self.sending = waiting
            self.idle.clear()
            waiting.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task) -> None:
        self.sending = None
        if task.cancelled():
            self.idle.set()
            return
        if task.exception() is not None:
            self.close(1000, "")
            self.idle.set()
            return
        frames = self.queue
        if frames:
            self.queue = []
            self.queued = 0
            self._start(frames[0] if len(frames) == 1 else "[" + ",".join(f[1:-1] for f in frames) + "]")
        if self.sending is None:
            self.idle.set()

    def close(self, code: int, reason: str, drain: bool = False) -> None:
        """Have the connection closed with ``code``, after what is queued when ``drain``, else at once; the hub
        forgets it now."""
        if self.close_reason is not None:
            return
        self.close_reason = (code, reason)
        self.draining = drain
        if not drain:
            self.queue = []
            self.queued = 0
            if self.sending is not None:
                self.sending.cancel()
        self.hub.drop(self)
        self.done.set()

    def take_token(self) -> bool:
        """Whether the connection may send one more message now."""
        return self.budget.take(None) == 0.0
