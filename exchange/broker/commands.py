"""The command bus: gateways hand commands to the leading engine over NATS request/reply.

Envelope
--------
A request on ``tokex.cmd.<group>`` is a msgpack array of ``Envelope``s, each itself an array: the ``Command``
(tagged by its ``command`` field, ``exchange.commands``), the digest of the signed request that carries it
(``exchange.replay``; 16 bytes), and ``retry``, set only when a gateway sends the same envelope again because it
lost the answer. The reply is an array as long, in the same order: each command's ``Result`` in its tagged form
(``exchange.commands.encode_result``), or ``Refused`` (the engine takes no commands now: nothing of that command
was applied) or ``Invalid`` (the request could not be read: a gateway of another version).

A gateway sends in one request the commands its routes submitted in the same turn of its event loop (at most
``GROUP_LIMIT``), so that under load NATS's cost per message, on both sides, is shared by many commands; alone, a
command travels alone. The engine answers a request once all its commands have committed, which is normally one
batch.

Every command carries a request id: a gateway gives one (random) to a command that no signed request carries.
That is what makes a retry safe: the engine remembers each request id with its result, so a retry of a command
that committed (before its engine died, or while the gateway had stopped waiting) is answered with the original
result and applied once (``Engine.apply``).

Engine side
-----------
``CommandServer`` subscribes to the group's subject only while its sequencer takes commands: not before this
engine leads (it holds the writer lock, ``api.roles.engine``), and not while its sequencer is down or rebuilding, so
that a half-dead leader never answers. Each command goes to ``Sequencer.enqueue``; the answers of a committed batch
are published together by one task, after the commit, rather than by a task per request.

Gateway side
------------
``RemoteSequencer`` has the interface the routes use of ``exchange.sequencer.Sequencer`` (``submit``, ``down``,
``refused``, ``queue_depth``): a route does not know which one it talks to. No responder, no answer in time, or a
refusal: it sends the commands again, as retries, with a growing pause, until ``deadline`` (longer than a failover
takes), then raises ``Unavailable``, which the API answers with 503 and Retry-After. It never reports a success it
did not get. One task per request sent, none per command.
It also follows the leader's heartbeat on ``tokex.engine.leader`` (``Heartbeat``), for ``GET /v1/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Union

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeout

from exchange import tasks
from exchange.broker.subjects import DEFAULT_GROUP, ENGINE_LEADER, command_subject
from exchange.commands import Command, Result
from exchange.sequencer import Sequencer, Unavailable

log = logging.getLogger(__name__)

AnyCommand = Union[tuple(Command.__subclasses__())]  # noqa: UP007  (a union built from a tuple of types)
"""Every command the engine handles, as one tagged union."""

DEADLINE = 6.0
"""Seconds a gateway keeps sending a command before it answers 503: more than a failover takes (5 s at most)."""
ATTEMPT_TIMEOUT = 1.0
"""Seconds one attempt waits for its answer; a batch commits well within it."""
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 0.5
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_STALE = 3.0
"""A leader whose last heartbeat is older than this is taken for gone."""
WATCH_SECONDS = 0.05
"""How often an engine checks whether its sequencer takes commands, to subscribe or unsubscribe."""
REQUEST_ID_BYTES = 16
GROUP_LIMIT = 256
"""The most commands a gateway sends in one request (a few tens of kilobytes, far below NATS's payload limit)."""


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    command: AnyCommand
    request: bytes | None = None
    """The digest of the signed request carrying the command, or a request id the gateway made."""
    retry: bool = False


class Refused(msgspec.Struct, frozen=True, tag_field="result", tag="refused", array_like=True):
    """The engine takes no commands now (rebuilding, stopping); nothing of the command was applied."""

    reason: str
    retry_after: float = 1.0


class Invalid(msgspec.Struct, frozen=True, tag_field="result", tag="invalid", array_like=True):
    """The engine could not read the envelope."""

    message: str


class Heartbeat(msgspec.Struct, frozen=True):
    """Who leads an engine group, published every ``HEARTBEAT_SECONDS`` on ``tokex.engine.leader``."""

    group: str
    host: str
    pid: int
    since: float
    """Unix seconds when this engine became the leader."""


Reply = Union[Result, Refused, Invalid]  # noqa: UP007

_ENCODER = msgspec.msgpack.Encoder()
_ENVELOPES_DECODER = msgspec.msgpack.Decoder(list[Envelope])
_REPLIES_DECODER = msgspec.msgpack.Decoder(list[Reply])
_HEARTBEAT_DECODER = msgspec.json.Decoder(Heartbeat)


def encode_request(envelopes: list[Envelope]) -> bytes:
    return _ENCODER.encode(envelopes)


def decode_replies(data: bytes) -> list[Result | Refused | Invalid]:
    return _REPLIES_DECODER.decode(data)


def heartbeat_of(data: bytes) -> Heartbeat:
    return _HEARTBEAT_DECODER.decode(data)


class CommandServer:
    """Take a group's commands from NATS into ``sequencer`` while it leads; answer each after its commit."""

    def __init__(self, nc: Client, sequencer: Sequencer, group: str = DEFAULT_GROUP) -> None:
        self.nc = nc
        self.sequencer = sequencer
        self.group = group
        self.subject = command_subject(group)
        self._subscription: Subscription | None = None
        self._answers: list[tuple[str, bytes]] = []
        """(reply subject, encoded reply) waiting to be published."""
        self._answered = asyncio.Event()
        self._taking = False
        self._tasks: list[asyncio.Task] = []
        self.received = 0

    async def start(self) -> None:
        """Take commands whenever the sequencer does, from now until ``stop``."""
        loop = asyncio.get_running_loop()
        self._taking = True
        await self._follow_sequencer()
        self._tasks = [loop.create_task(self._watch(), name="command-server-watch"),
                       loop.create_task(self._reply(), name="command-server-replies")]

    async def stop_taking(self) -> None:
        """Take no new commands; those already received are queued in the sequencer (stop it next)."""
        self._taking = False
        await self._unsubscribe(drain=True)

    async def stop(self) -> None:
        """Publish the answers still waiting (after the sequencer stopped) and stop."""
        await self.stop_taking()
        watch, replies = self._tasks or (None, None)
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if replies is not None:
            replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replies
        await self._publish_answers()
        if self.nc.is_connected:
            await self.nc.flush()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            await self._follow_sequencer()

    async def _follow_sequencer(self) -> None:
        up = self._taking and self.sequencer.down is None
        if up and self._subscription is None:
            # A queue group: should two engines ever both subscribe, each command still goes to one.
            self._subscription = await self.nc.subscribe(self.subject, queue=self.group, cb=self._on_command)
            # Once the server has the subscription, and before the heartbeat says this engine leads.
            with contextlib.suppress(NatsTimeout, ConnectionClosedError):
                await self.nc.flush()
            log.info("taking commands on %s", self.subject)
        elif not up and self._subscription is not None:
            log.warning("not taking commands on %s: %s", self.subject, self.sequencer.down or "stopping")
            await self._unsubscribe(drain=False)

    async def _unsubscribe(self, drain: bool) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        # Draining hands the commands already received to the sequencer first; without it they get no answer and
        # their gateways send them again to whichever engine leads.
        with contextlib.suppress(ConnectionClosedError):
            await (subscription.drain() if drain else subscription.unsubscribe())

    async def _on_command(self, msg: Msg) -> None:
        try:
            envelopes = _ENVELOPES_DECODER.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._answer(msg.reply, _ENCODER.encode([Invalid(f"unreadable command request: {exc}")]))
            return
        self.received += len(envelopes)
        request = _Request(self, msg.reply, len(envelopes))
        enqueue = self.sequencer.enqueue
        for position, envelope in enumerate(envelopes):
            answer = _Answer(request, position)
            try:
                enqueue(envelope.command, envelope.request, envelope.retry, answer)
            except Unavailable as exc:
                answer.set_exception(exc)

    def _answer(self, reply: str, data: bytes) -> None:
        if reply:
            self._answers.append((reply, data))
            self._answered.set()


    async def _reply(self) -> None:
        """Publish answers as they come: a committed batch's answers all go out in one turn."""
        while True:
            await self._answered.wait()
            self._answered.clear()
            await self._publish_answers()

    async def _publish_answers(self) -> None:
        answers, self._answers = self._answers, []
        publish = self.nc.publish
        for reply, data in answers:
            try:
                await publish(reply, data)
            except (ConnectionClosedError, OutboundBufferLimitError):
                # These gateways get no answer; they send their commands again, as retries, and the engine answers
                # each with the original result it keeps with the request (``exchange.replay``).
                log.warning("NATS is unreachable; %d answer(s) left to the gateways' retries", len(answers))
                return


class _Request:
    """The commands of one request, answered together once each has its reply."""

    __slots__ = ("left", "replies", "reply", "server")

    def __init__(self, server: CommandServer, reply: str, commands: int) -> None:
        self.server = server
        self.reply = reply
        self.replies: list[Result | Refused | None] = [None] * commands
        self.left = commands

    def settle(self, position: int, reply: Result | Refused) -> None:
        self.replies[position] = reply
        self.left -= 1
        if self.left == 0:
            self.server._answer(self.reply, _ENCODER.encode(self.replies))


class _Answer:
    """Where the sequencer puts one command's outcome (an ``exchange.sequencer.Answer``): its place in its request's
    reply. A future and its done callback would cost each command a turn of the event loop."""

    __slots__ = ("position", "request")

    def __init__(self, request: _Request, position: int) -> None:
        self.request = request
        self.position = position

    def done(self) -> bool:
        return self.request.replies[self.position] is not None

    def set_result(self, result: Result) -> None:
        self.request.settle(self.position, result)

    def set_exception(self, exception: BaseException) -> None:
        if isinstance(exception, Unavailable):
            self.request.settle(self.position, Refused(str(exception), exception.retry_after))
            return
        log.error("a command failed in the sequencer", exc_info=exception)
        self.request.settle(self.position, Refused("the engine hit an internal error"))


class LeaderHeartbeat:
    """Publish that this engine leads ``group``, every ``HEARTBEAT_SECONDS``, until stopped."""

    def __init__(self, nc: Client, group: str = DEFAULT_GROUP) -> None:
        self.nc = nc
        self.beat = Heartbeat(group, socket.gethostname(), os.getpid(), time.time())
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leader-heartbeat")

    async def stop(self) -> None:
        await tasks.cancel(self._task)

    async def _run(self) -> None:
        data = msgspec.json.encode(self.beat)
        while True:
            # While NATS is away beats are lost; the next one tells the gateways once it is back.
            with contextlib.suppress(ConnectionClosedError, OutboundBufferLimitError):
                await self.nc.publish(ENGINE_LEADER, data)
            await asyncio.sleep(HEARTBEAT_SECONDS)


class RemoteSequencer:
    """A gateway's way to the leading engine of ``group``, with the ``Sequencer`` interface the routes use."""

    def __init__(self, nc: Client, group: str = DEFAULT_GROUP, deadline: float = DEADLINE) -> None:
        self.nc = nc
        self.group = group
        self.subject = command_subject(group)
        self.deadline = deadline
        self.leader: Heartbeat | None = None
        self._leader_seen = 0.0
        """``time.monotonic()`` of the last heartbeat."""
        self._subscription: Subscription | None = None
        self.refused = 0
        """Commands answered ``Unavailable``."""
        self.queue_depth = 0
        """Commands sent and not answered yet."""
        self.on_commit = None
        """For ``api.metrics``: an engine's committed batches are counted by the engine, not here."""
        self._outbox: list[tuple[Envelope, asyncio.Future]] = []
        """Commands submitted in this turn of the loop, sent together at its end."""
        self._sending: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Follow the leader's heartbeat."""
        self._subscription = await self.nc.subscribe(ENGINE_LEADER, cb=self._on_heartbeat)

    async def stop(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            with contextlib.suppress(ConnectionClosedError):
                await subscription.unsubscribe()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = heartbeat_of(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("an unreadable engine heartbeat: %r", msg.data[:200])
            return
        if beat.group == self.group:
            self.leader = beat
            self._leader_seen = time.monotonic()

    @property
    def leading(self) -> Heartbeat | None:
        """The leader of the last heartbeat, if it is recent."""
        if self.leader is None or time.monotonic() - self._leader_seen > HEARTBEAT_STALE:
            return None
        return self.leader

    @property
    def down(self) -> str | None:
        """Why commands cannot be taken now: no engine has announced itself as leader lately."""
        if self.leading is not None:
            return None
        if self.leader is None:
            return "no engine leads yet"
        return f"no heartbeat from the engine leader for over {HEARTBEAT_STALE:.0f} s"

    async def submit(self, command: Command, request: bytes | None = None) -> Result:
        """Have the leading engine apply ``command``; return its result once committed.

        Raise ``Unavailable`` when no engine answered within ``deadline`` seconds: then the command was either
        never applied, or applied once and its answer is what a retry of the same request returns."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._outbox.append((Envelope(command, request or os.urandom(REQUEST_ID_BYTES)), future))
        if len(self._outbox) == 1:
            loop.call_soon(self._send_outbox)
        self.queue_depth += 1
        try:
            return await future
        finally:
            self.queue_depth -= 1

    def _send_outbox(self) -> None:
        outbox, self._outbox = self._outbox, []
        for start in range(0, len(outbox), GROUP_LIMIT):
            task = asyncio.get_running_loop().create_task(self._send(outbox[start:start + GROUP_LIMIT]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, pending: list[tuple[Envelope, asyncio.Future]]) -> None:
        """Send the commands until each has its answer, or the deadline has passed."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        pause = FIRST_PAUSE
        while True:
            left = give_up - loop.time()
            why = ""
            try:
                msg = await self.nc.request(self.subject, _ENCODER.encode([envelope for envelope, _ in pending]),
                                            timeout=max(0.01, min(ATTEMPT_TIMEOUT, left)))
                replies = _REPLIES_DECODER.decode(msg.data)
            except NoRespondersError:
                why = "no engine takes commands"
            except NatsTimeout:
                why = "the engine did not answer in time"
            except (ConnectionClosedError, OutboundBufferLimitError):
                why = "the message broker is unreachable"
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                replies = [Invalid(f"an unreadable answer: {exc}")]
            if not why:
                if len(replies) != len(pending):
                    problem = replies[0].message if replies and type(replies[0]) is Invalid else "a short answer"
                    _fail(pending, RuntimeError(f"the engine could not read the commands: {problem}"))
                    return
                refused = []
                for (envelope, future), reply in zip(pending, replies, strict=True):
                    if type(reply) is Refused:
                        refused.append((envelope, future))
                        why = reply.reason
                    elif not future.done():
                        future.set_result(reply)
                if not refused:
                    return
                pending = refused
            if loop.time() + pause >= give_up:
                self.refused += len(pending)
                _fail(pending, Unavailable(f"no engine could take the command within {self.deadline:.0f} s "
                                           f"({why})", retry_after=1.0))
                return
            pending = [(msgspec.structs.replace(envelope, retry=True), future) for envelope, future in pending]
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)


def _fail(pending: list[tuple[Envelope, asyncio.Future]], exc: Exception) -> None:
    for _, future in pending:
        if not future.done():
            future.set_exception(exc)
