"""The NATS subjects and JetStream streams of a tokex cluster, and the market-data stream's set-up.

Subjects
    tokex.cmd.<group>       commands, gateway -> engine, by request/reply: the engine that leads the
                            engine group answers after the commit. One group, DEFAULT_GROUP, holds every
                            instrument today; partitioning instruments across groups adds names here.
    tokex.md.<symbol>       market data, engine -> gateways: what each batch committed, once per
                            instrument, in the instrument's seq order. Stored in the stream TOKEX_MD.
    tokex.user              the account events (orders, fills, balances) of each committed batch, every
                            account's in one message, engine -> gateways, for the feed's `user` channel (core
                            NATS, numbered so that a gateway notices one missing).
    tokex.engine.leader     the leading engine's heartbeat: who leads now (host, pid), for standbys and
                            for `GET /v1/health`.
    tokex.engine.seqs       the leading engine's settled seq of every instrument and its last settled account
                            message, every second and after a resync (core NATS, not stored): a gateway behind
                            it for more than a moment missed a message and reloads from PostgreSQL
                            (`exchange.broker.market_stream` describes the messages).
    tokex.packages          each committed period of a package, from the scheduler on the leading engine to the
                            gateways' feeds (core NATS: a notification; the REST history has every period).
    tokex.index             the price index's new rows, from the minute job on the leading engine to the
                            gateways' feeds (core NATS: a gateway that misses one reads the latest rows from
                            PostgreSQL when it starts, and the next minute brings the next).
    tokex.limits            gateway -> gateways, every 0.1 s: what each let through per rate-limited key and
                            address, and its feed connections per address, so limits hold across gateways.

Symbols in subjects
    A NATS subject is split into tokens at dots, and a symbol may hold one (`GLM-4.5`). In a subject the
    symbol's dots are written `~`, a character symbols never contain ([A-Z0-9._-]), so each symbol is
    exactly one token: `tokex.md.*` matches every instrument and `tokex.md.GLM-4~5` only that one.

Market data and deduplication
    Each market-data message carries the header Nats-Msg-Id = `<symbol>:<seq>`. JetStream stores a
    message id once within the stream's duplicate window, so an engine that takes over and publishes a
    batch again (it cannot know whether the one it replaces did) changes nothing. The window,
    DUPLICATE_WINDOW, is far longer than a failover. A gateway catches up from the stream starting at a
    snapshot's seq; what is older than MAX_AGE or beyond MAX_BYTES is dropped (a gateway that far behind
    starts from a new snapshot).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError

PREFIX = "tokex"
DEFAULT_GROUP = "main"
MARKET_DATA_STREAM = "TOKEX_MD"
MARKET_DATA_SUBJECTS = f"{PREFIX}.md.*"
ENGINE_LEADER = f"{PREFIX}.engine.leader"
ENGINE_SEQS = f"{PREFIX}.engine.seqs"
USER_EVENTS = f"{PREFIX}.user"
PRICE_INDEX = f"{PREFIX}.index"
PACKAGE_EXECUTIONS = f"{PREFIX}.packages"
LIMITS = f"{PREFIX}.limits"
MSG_ID_HEADER = "Nats-Msg-Id"

DUPLICATE_WINDOW = 120.0  # seconds
MAX_AGE = 24 * 3600.0  # seconds
MAX_BYTES = 1024 * 1024 * 1024

# JetStream's error code for "stream name already in use with a different configuration".
_STREAM_EXISTS_OTHERWISE = 10058


def command_subject(group: str = DEFAULT_GROUP) -> str:
    """Return the subject an engine group takes commands on."""
    return f"{PREFIX}.cmd.{_token(group)}"


def market_data_subject(symbol: str) -> str:
    """Return the subject of an instrument's market data."""
    return f"{PREFIX}.md.{_token(symbol)}"


def symbol_of(subject: str) -> str:
    """Return the symbol a market-data subject names (the inverse of `market_data_subject`)."""
    prefix = f"{PREFIX}.md."
    if not subject.startswith(prefix):
        raise ValueError(f"{subject!r} is not a market-data subject ({prefix}<symbol>)")
    return subject[len(prefix):].replace("~", ".")


def market_data_msg_id(symbol: str, seq: int) -> str:
    """Return the message id that deduplicates an instrument's message at `seq`."""
    return f"{symbol}:{seq}"


def market_data_stream_config(replicas: int = 1) -> StreamConfig:
    """Return the configuration of TOKEX_MD; `replicas` is 1 on one server, 3 on a NATS cluster."""
    return StreamConfig(
        name=MARKET_DATA_STREAM,
        description="tokex market data: what each batch committed, per instrument, in seq order",
        subjects=[MARKET_DATA_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=MAX_AGE,
        max_bytes=MAX_BYTES,
        duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas,
    )


async def ensure_market_data_stream(js: JetStreamContext, replicas: int = 1) -> StreamInfo:
    """Create TOKEX_MD, or bring an existing one to the current configuration; safe to call from every engine."""
    config = market_data_stream_config(replicas)
    try:
        # Creating a stream that exists with the same configuration succeeds and changes nothing.
        return await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_EXISTS_OTHERWISE:
            raise
    return await js.update_stream(config)


def _token(name: str) -> str:
    token = name.replace(".", "~")
    if not token or any(c in token for c in " \t\r\n*>"):
        raise ValueError(f"{name!r} cannot be part of a NATS subject: it is empty or holds a space, * or >")
    return token
